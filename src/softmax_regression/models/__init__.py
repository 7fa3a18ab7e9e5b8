"""The chapter's two models, the baseline, and the model file that carries any of them.

This file holds the choices only (no torch: the params check reads them), each
list once; the modules hold what is chosen:

- ``scratch.py``: the chapter's model from scratch, ``softmax(X W + b)``, its loss, gradient and ``sgd``;
- ``concise.py``: the chapter's concise model, ``nn.Sequential``, ``nn.CrossEntropyLoss``, ``torch.optim.SGD``;
- ``losses.py``: the scratch model's losses (``train.loss``), each with its gradient;
- ``baseline.py``: scikit-learn's L-BFGS fit of the same linear model;
- ``file.py``: the model file: any of the three as its ``W`` and ``b``, written and read without their code.
"""

CHAPTER_KINDS = ("scratch", "concise")
"""The chapter's two implementations, trained by the one training loop."""
BASELINE_KIND = "baseline"
"""scikit-learn's L-BFGS fit of the same linear softmax model."""
MODEL_KINDS = (*CHAPTER_KINDS, BASELINE_KIND)
"""Every kind a model file can hold."""

LOSSES = ("cross_entropy", "squared", "margin")
"""``train.loss``, the default first: the chapter's cross-entropy, the squared error of softmax against the
one-hot labels, the multi-class hinge. Each chapter model implements every one (a test checks it)."""
