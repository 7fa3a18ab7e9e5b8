"""The code paths that decide the pipeline's bits, on a small subset of the real data; prints their digests.

Run as ``python tests/integration/bits_probe.py SUBSET.npz [--torch-only]`` in the environment to test (for example
under ``qemu-x86_64 -cpu EPYC``): the training steps of both models with the chapter's SGD, the validation
pass (logits and accuracy), the baseline's L-BFGS solver, and libm's exp and log. It prints one JSON
object: a SHA-256 per result, what each numeric library chose (``pipeline.kernels.chosen``) and the CPU
features numpy found, which show that the process ran on the emulated CPU.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project's pipeline/ (for kernels.chosen)

from pipeline.kernels import chosen  # noqa: E402
from softmax_regression.data.batches import ShuffledBatches, to_labels  # noqa: E402
from softmax_regression.data.features import features  # noqa: E402
from softmax_regression.models import concise, losses, scratch  # noqa: E402
from softmax_regression.training.loop import initial_weights, train  # noqa: E402


def digest(*arrays) -> str:
    sha = hashlib.sha256()
    for array in arrays:
        array = array.detach().numpy() if isinstance(array, torch.Tensor) else array
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def chapter_model(kind: str, W: torch.Tensor, lr: float):
    """``(net, step, weights)`` of a chapter model starting from ``W``, on the cross-entropy, as the train
    stages build it (``pipeline/train_scratch.py``, ``pipeline/train_concise.py``)."""
    if kind == "scratch":
        return scratch.trainer(W, 0.0, *losses.LOSSES["cross_entropy"])
    return concise.trainer(W, lr, 0.0, "cross_entropy")


def main(subset: str, torch_only: bool) -> None:
    torch.set_num_threads(1)
    data = np.load(subset)
    train_x, train_y, val_x, val_y = data["train_x"], data["train_y"], data["val_x"], data["val_y"]
    found = {}
    for kind in ("scratch", "concise"):
        generator = torch.Generator().manual_seed(0)
        net, step, weights = chapter_model(kind, initial_weights(train_x.shape[1], 10, 0.01, generator), lr=0.1)
        batches = ShuffledBatches(train_x, train_y, 256, generator)
        val = features(val_x, None)
        history = train(net, step, batches, val, to_labels(val_y), [0.1] * 2, kind, progress=False)
        with torch.no_grad():
            logits = net(val)
        found[kind] = {"weights": digest(*weights()), "val_logits": digest(logits),
                       "train_loss": history[-1].train_loss, "val_acc": history[-1].val_acc}
    if not torch_only:
        from softmax_regression.models.baseline import fit_logistic_regression

        fitted = fit_logistic_regression(features(train_x, None).numpy(), train_y, C=1.0, max_iter=10, tol=0.0)
        found["baseline"] = {"weights": digest(fitted.coef_, fitted.intercept_)}
    # float64 exp and log as scikit-learn's loss takes them: libm's code, which glibc picks per CPU
    x = np.linspace(-20.0, 20.0, 10007)
    found["libm"] = digest(np.exp(x), np.log(np.abs(x) + 1e-3))
    from numpy._core import _multiarray_umath as umath

    found["chosen"] = chosen()
    found["cpu_features"] = sorted(name for name, present in umath.__cpu_features__.items() if present)
    print(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1], "--torch-only" in sys.argv[2:])
