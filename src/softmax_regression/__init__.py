"""Softmax regression on Fashion-MNIST, after Dive into Deep Learning (chapter 3).

The library knows nothing of the pipeline that runs it: ``pipeline/`` holds
one thin command per stage that reads params.yaml and calls in here, passing
in the project root and the tags to put on runs.
"""

CLASS_NAMES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
"""Text labels of the ten classes, in label order (as in the chapter's get_fashion_mnist_labels)."""

CHAPTER_KINDS = ("scratch", "concise")
"""The chapter's two implementations, trained by the one training loop."""
BASELINE_KIND = "baseline"
"""scikit-learn's L-BFGS fit of the same linear softmax model."""
MODEL_KINDS = (*CHAPTER_KINDS, BASELINE_KIND)
"""Every kind a model file can hold."""

__version__ = "0.1.0"
