"""The chapter's maths in the scratch model, its agreement with the concise one, the baseline as a linear
model, and the model file."""

import io
import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samples import chapter_model, save_model
from softmax_regression import models
from softmax_regression.data.batches import ShuffledBatches, to_labels
from softmax_regression.data.features import scale_pixels
from softmax_regression.models import concise, losses, scratch
from softmax_regression.models.file import ModelFileError, load_model, model_bytes, model_from_bytes
from softmax_regression.models.scratch import cross_entropy, cross_entropy_grad, log_softmax, softmax
from softmax_regression.training.history import history_csv, read_history_csv
from softmax_regression.training.loop import TrainingDiverged, check_not_diverged, initial_weights, train


def random_logits(n=64, k=10, scale=5.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g, dtype=torch.float64) * scale, torch.randint(0, k, (n,), generator=g)


def test_softmax_rows_sum_to_one():
    O, _ = random_logits()
    P = softmax(O)
    assert torch.all(P > 0)
    torch.testing.assert_close(P.sum(dim=1), torch.ones(len(O), dtype=O.dtype), rtol=0, atol=1e-12)
    torch.testing.assert_close(P, torch.softmax(O, dim=1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("big", [1000.0, -1000.0])
def test_softmax_and_cross_entropy_stay_finite_for_huge_logits(big):
    O = torch.tensor([[big, 0.0, -big], [big, big, big], [0.0, big / 2, big]], dtype=torch.float32)
    y = torch.tensor([0, 1, 2])
    P = softmax(O)
    assert torch.isfinite(P).all()
    torch.testing.assert_close(P.sum(dim=1), torch.ones(3), rtol=0, atol=1e-6)
    assert torch.isfinite(log_softmax(O)).all()
    loss = cross_entropy(O, y)
    assert math.isfinite(loss.item())
    torch.testing.assert_close(loss, F.cross_entropy(O, y), rtol=0, atol=1e-4)
    # the chapter's naive softmax overflows right here
    naive = torch.exp(O) / torch.exp(O).sum(dim=1, keepdim=True)
    assert not torch.isfinite(naive).all()


def test_cross_entropy_by_indexing_matches_torch():
    O, y = random_logits(n=256, scale=3.0)
    torch.testing.assert_close(cross_entropy(O, y), F.cross_entropy(O, y), rtol=0, atol=1e-6)
    # the loss the scratch training step reports is this very function
    assert losses.LOSSES["cross_entropy"] == (cross_entropy, cross_entropy_grad)
    O32, y32 = O.float(), y
    torch.testing.assert_close(cross_entropy(O32, y32), F.cross_entropy(O32, y32), rtol=0, atol=1e-6)


def test_gradient_is_softmax_minus_onehot():
    O, y = random_logits(n=32)
    O.requires_grad_(True)
    # per-example loss summed: d/dO_i = softmax(O_i) - onehot(y_i), the chapter's formula
    (cross_entropy(O, y) * len(O)).backward()
    expected = softmax(O.detach()) - F.one_hot(y, 10).to(O.dtype)
    torch.testing.assert_close(O.grad, expected, rtol=0, atol=1e-10)
    # the hand-written gradient the scratch training step uses (of the mean loss)
    grad = cross_entropy_grad(O.detach(), y)
    torch.testing.assert_close(grad * len(O), expected, rtol=0, atol=1e-10)


def synthetic_data(n=2000, d=784, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    prototypes = rng.integers(0, 256, (10, d))
    noise = rng.integers(-60, 60, (n, d))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels


def train_one(kind, images, labels, epochs=1, lr=0.1, weight_decay=0.0, seed=0, batch_size=64, loss="cross_entropy"):
    """A ``kind`` model trained from seeded weights as the train stages train it: ``(weights(), history)``."""
    g = torch.Generator().manual_seed(seed)
    net, step, weights = chapter_model(kind, initial_weights(images.shape[1], 10, 0.01, g), lr=lr,
                                       weight_decay=weight_decay, loss=loss)
    batches = ShuffledBatches(images, labels, batch_size, g)
    history = train(net, step, batches, scale_pixels(images[:200]), to_labels(labels[:200]), [lr] * epochs, kind,
                    progress=False)
    return weights(), history


def test_every_loss_is_implemented_by_both_models_under_the_names_the_params_allow():
    """One list of names (``softmax_regression.models.LOSSES``, what ``train.loss`` allows), the same names in
    the same order in the scratch model's losses and the concise model's, each of the concise ones torch's own."""
    assert tuple(losses.LOSSES) == tuple(concise.LOSSES) == models.LOSSES
    assert models.LOSSES[0] == "cross_entropy"  # the chapter's, the default
    assert concise.LOSSES["cross_entropy"] is torch.nn.CrossEntropyLoss
    assert concise.LOSSES["margin"] is torch.nn.MultiMarginLoss
    assert issubclass(concise.LOSSES["squared"], torch.nn.Module)


@pytest.mark.parametrize("loss", models.LOSSES)
def test_each_losss_hand_written_gradient_is_autograds(loss):
    """The scratch model's gradient formula for every train.loss against autograd of the same loss (its own
    and torch's built-in the concise model uses), and the loss itself against that built-in."""
    g = torch.Generator().manual_seed(3)
    O = (torch.randn(32, 10, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    y = torch.randint(0, 10, (32,), generator=g)
    loss_fn, grad_fn = losses.LOSSES[loss]
    value, grad = loss_fn(O.detach(), y), grad_fn(O.detach(), y)
    builtin = concise.LOSSES[loss]()(O, y)
    builtin.backward()
    torch.testing.assert_close(value, builtin.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, O.grad, rtol=0, atol=1e-12)
    (own,) = torch.autograd.grad(loss_fn(O, y), O)
    torch.testing.assert_close(grad, own, rtol=0, atol=1e-12)


@pytest.mark.parametrize("weight_decay, loss", [(0.0, "cross_entropy"), (0.01, "cross_entropy"),
                                                (0.0, "squared"), (0.0, "margin"), (0.01, "margin")])
def test_scratch_and_concise_agree_after_one_epoch(weight_decay, loss):
    images, labels = synthetic_data()
    (W_s, b_s), h_scratch = train_one("scratch", images, labels, weight_decay=weight_decay, loss=loss)
    (W_c, b_c), h_concise = train_one("concise", images, labels, weight_decay=weight_decay, loss=loss)
    assert not torch.equal(W_s, initial_weights(784, 10, 0.01, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(W_s, W_c, rtol=0, atol=1e-5)
    torch.testing.assert_close(b_s, b_c, rtol=0, atol=1e-5)
    assert abs(h_scratch[0].train_loss - h_concise[0].train_loss) < 1e-5


def test_both_models_start_from_the_same_seeded_weights():
    W0 = initial_weights(784, 10, 0.01, torch.Generator().manual_seed(3))
    assert W0.shape == (784, 10)
    assert abs(W0.std().item() - 0.01) < 0.0005 and abs(W0.mean().item()) < 0.001
    (W_s, b_s), (W_c, b_c) = (chapter_model(kind, W0)[2]() for kind in ("scratch", "concise"))
    torch.testing.assert_close(W_s, W_c, rtol=0, atol=0)
    torch.testing.assert_close(W_s, W0, rtol=0, atol=0)
    assert torch.equal(b_s, torch.zeros(10)) and torch.equal(b_c, torch.zeros(10))
    # and compute the same logits from them: X W + b
    X = torch.rand(5, 784, generator=torch.Generator().manual_seed(4))
    nets = [chapter_model(kind, W0)[0] for kind in ("scratch", "concise")]
    with torch.no_grad():
        for net in nets:
            torch.testing.assert_close(net(X), X @ W0, rtol=0, atol=1e-6)


def test_training_learns_and_history_is_complete():
    images, labels = synthetic_data()
    for kind in ("scratch", "concise"):
        _, history = train_one(kind, images, labels, epochs=3)
        assert [r.epoch for r in history] == [1, 2, 3]
        assert history[-1].train_loss < history[0].train_loss
        assert history[-1].val_acc > 0.9  # prototypes plus noise are easy


def test_batches_cover_every_example_once_per_epoch_in_seeded_order():
    images = np.arange(1000, dtype=np.uint8).reshape(1000, 1).repeat(4, axis=1) % 251
    labels = (np.arange(1000) % 10).astype(np.uint8)
    first = ShuffledBatches(images, labels, 64, torch.Generator().manual_seed(1))
    seen = torch.cat([y.clone() for _, y in first])
    assert len(seen) == 1000 and sorted(seen.tolist()) == sorted(labels.tolist())
    X, _ = next(iter(ShuffledBatches(images, labels, 64, torch.Generator().manual_seed(1))))
    X2, _ = next(iter(ShuffledBatches(images, labels, 64, torch.Generator().manual_seed(1))))
    assert torch.equal(X, X2) and X.dtype == torch.float32 and float(X.max()) <= 1.0
    X3, _ = next(iter(ShuffledBatches(images, labels, 64, torch.Generator().manual_seed(2))))
    assert not torch.equal(X, X3)


def test_batches_are_the_rows_of_a_seeded_permutation_scaled_exactly():
    """A batch is, bit for bit, ``images[order] / 255`` in the seeded order, with a short last batch."""
    images, labels = synthetic_data(n=1000)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(3))
    expected = scale_pixels(images)[order]
    batches = ShuffledBatches(images, labels, 96, torch.Generator().manual_seed(3))
    got = list(batches)
    assert [len(y) for _, y in got] == [96] * 10 + [40]
    assert torch.equal(torch.cat([X for X, _ in got]), expected)
    assert torch.equal(torch.cat([y for _, y in got]), to_labels(labels)[order])
    assert torch.equal(batches.epoch_labels, to_labels(labels)[order])


@pytest.mark.parametrize("loss", models.LOSSES)
def test_concise_steps_are_torchs_sgd_formula_to_the_bit(loss):
    """The concise model's step, ``torch.optim.SGD`` behind ``zero_grad``/``backward``/``step``, is torch's SGD
    update ``p -= lr (grad + weight_decay p)`` run by hand on autograd's gradient: the same weights, bit for bit,
    after steps with weight decay and the step's learning rate changed midway; and each step answers the loss
    and logits from before its update."""
    from torch import nn
    g = torch.Generator().manual_seed(0)
    W = initial_weights(784, 10, 0.01, g)
    net = concise.net(W)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=0.001)
    step = concise.sgd_step(net, concise.LOSSES[loss](), optimizer)
    reference = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        reference[1].weight.copy_(W.T)
        reference[1].bias.zero_()
    reference_loss = concise.LOSSES[loss]()
    for i in range(30):
        X, y = torch.rand(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)
        lr = 0.1 if i < 15 else 0.02
        value, logits = step(X, y, lr)
        for param in reference.parameters():
            param.grad = None
        expected_logits = reference(X)
        expected = reference_loss(expected_logits, y)
        expected.backward()
        with torch.no_grad():  # torch.optim.sgd's update, without momentum
            for param in reference.parameters():
                param.add_(param.grad.add(param, alpha=0.001), alpha=-lr)
        assert torch.equal(value, expected.detach()) and torch.equal(logits, expected_logits.detach())
        assert not value.requires_grad and not logits.requires_grad
    assert [group["lr"] for group in optimizer.param_groups] == [0.02]
    assert torch.equal(net[1].weight, reference[1].weight) and torch.equal(net[1].bias, reference[1].bias)
    W_c, b_c = concise.weights(net)
    assert torch.equal(W_c, reference[1].weight.detach().T) and torch.equal(b_c, reference[1].bias.detach())


def test_scratch_step_is_the_chapters_sgd_on_the_formula_gradient():
    """``scratch.sgd_step``: logits ``X W + b`` before the update, then ``W -= lr (X^T dO + wd W)`` and
    ``b -= lr (sum dO + wd b)`` with ``dO`` the loss's gradient formula, at the learning rate of the call."""
    g = torch.Generator().manual_seed(6)
    W0, b0 = torch.randn(20, 10, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)
    net = scratch.Net(W0, b0)
    assert torch.equal(net.W, W0) and torch.equal(net.b, b0)
    assert net.W.data_ptr() != W0.data_ptr() and net.b.data_ptr() != b0.data_ptr()  # its own copies
    step = scratch.sgd_step(net, *losses.LOSSES["squared"], weight_decay=0.01)
    X, y = torch.rand(8, 20, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)
    value, logits = step(X, y, 0.5)
    torch.testing.assert_close(logits, X @ W0 + b0, rtol=0, atol=1e-12)
    torch.testing.assert_close(value, losses.squared(X @ W0 + b0, y), rtol=0, atol=1e-12)
    dO = losses.squared_grad(X @ W0 + b0, y)
    torch.testing.assert_close(net.W, W0 - 0.5 * (X.T @ dO + 0.01 * W0), rtol=0, atol=1e-12)
    torch.testing.assert_close(net.b, b0 - 0.5 * (dO.sum(dim=0) + 0.01 * b0), rtol=0, atol=1e-12)
    torch.testing.assert_close(scratch.matmul(X, W0), X @ W0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["scratch", "concise"])
def test_divergence_names_the_epoch(kind):
    images, labels = synthetic_data(n=500)
    with pytest.raises(TrainingDiverged,
                       match=rf"the {kind} model diverged in epoch 1: mean train loss is .*lower train.lr"):
        train_one(kind, images, labels, lr=1e6, epochs=3)


def test_large_initial_weights_are_named_beside_the_learning_rate_in_the_first_epoch_only():
    """Weights started far above the chapter's N(0, 0.01^2) blow the first epoch's loss up at any learning rate
    (a lower one only keeps it there): the message names train.init_std too, then only train.lr."""
    images, labels = synthetic_data(n=500)
    g = torch.Generator().manual_seed(0)
    net, step, _ = chapter_model("scratch", initial_weights(784, 10, 10.0, g))
    with pytest.raises(TrainingDiverged, match=r"epoch 1: mean train loss is .*; lower train\.lr, or train\.init_std "
                                               r"if it is far above the chapter's 0\.01$"):
        train(net, step, ShuffledBatches(images, labels, 64, g), scale_pixels(images), to_labels(labels), [1e-4],
              "scratch", progress=False)
    with pytest.raises(TrainingDiverged, match=r"epoch 3: mean train loss is 1e\+04 \(limit 230, .*\); lower train\.lr$"):
        check_not_diverged(1e4, 3, "scratch")


def test_nan_input_is_divergence():
    images, labels = synthetic_data(n=300)
    g = torch.Generator().manual_seed(0)
    net, step, _ = chapter_model("scratch", initial_weights(784, 10, 0.01, g))
    net.W[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged,
                       match="training of the scratch model diverged in epoch 1: mean train loss is nan"):
        train(net, step, ShuffledBatches(images, labels, 64, g), scale_pixels(images), to_labels(labels), [0.1] * 2,
              "scratch", progress=False)


def test_history_csv_round_trip():
    images, labels = synthetic_data(n=300)
    _, history = train_one("scratch", images, labels, epochs=2)
    text = history_csv(history)
    assert text.splitlines()[0] == "epoch,train_loss,train_acc,val_acc"
    assert read_history_csv(text) == history


@pytest.mark.parametrize("kind", ["scratch", "concise"])
def test_model_file_round_trip(tmp_path, kind):
    images, labels = synthetic_data(n=300)
    (W, b), _ = train_one(kind, images, labels)
    path = tmp_path / f"{kind}.pt"
    save_model(path, kind, W, b, side=28, params={"train.lr": 0.1})
    loaded = load_model(path)
    assert loaded.kind == kind and loaded.side == 28 and loaded.class_names[9] == "ankle boot"
    assert loaded.params == {"train.lr": 0.1} and loaded.n_features == 784 and loaded.standardization is None
    torch.testing.assert_close(loaded.W, W, rtol=0, atol=0)
    torch.testing.assert_close(loaded.b, b, rtol=0, atol=0)
    X = scale_pixels(images[:5])
    torch.testing.assert_close(loaded.logits(X), X @ W + b, rtol=0, atol=1e-5)  # another layout of W: other last bits
    proba = loaded.predict_proba(torch.from_numpy(images[:5]))
    torch.testing.assert_close(proba.sum(1), torch.ones(5), rtol=0, atol=1e-6)
    torch.testing.assert_close(proba, torch.softmax(X @ W + b, dim=1), rtol=0, atol=1e-6)
    # the file loads with weights_only=True: nothing but tensors and plain containers inside
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint["state"]) == {"W", "b"} and checkpoint["state"]["W"].shape == (784, 10)
    # saving twice gives the same bytes
    save_model(tmp_path / "again.pt", kind, W, b, side=28, params={"train.lr": 0.1})
    assert (tmp_path / "again.pt").read_bytes() == path.read_bytes()
    assert list(tmp_path.glob(".*")) == []


class RunsCode:
    """What a hostile model file pickles: an object whose unpickling would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("pickled", ["torch archive", "bare pickle, protocol 2", "bare pickle, protocol 5"])
def test_a_file_holding_objects_that_could_run_code_is_named_as_such_and_nothing_runs(tmp_path, pickled):
    marker = tmp_path / "ran"
    payload = {"format": "softmax-regression-model/1", "x": RunsCode(marker)}
    path = tmp_path / "hostile.pt"
    if pickled == "torch archive":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(pickled[-1])))
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert str(info.value) == (f"model file {path} holds objects that could run code (Python classes or functions, "
                               "which torch's weights-only loader refuses): not loaded")
    assert not marker.exists()


def test_a_file_cut_short_or_foreign_is_unreadable_not_hostile(tmp_path):
    """A truncated archive, even of a hostile file, and pickles of plain data are not called hostile."""
    whole = io.BytesIO()
    torch.save({"format": "softmax-regression-model/1", "x": RunsCode(tmp_path / "ran")}, whole)
    for name, data in (("cut.pt", whole.getvalue()[:300]), ("dict.pt", pickle.dumps({"a": 1})), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelFileError, match=f"{name} is not a readable PyTorch file"):
            load_model(tmp_path / name)


def test_model_file_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(ModelFileError, match="junk.pt is not a readable PyTorch file"):
        load_model(tmp_path / "junk.pt")
    torch.save({"W": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="foreign.pt is not a softmax-regression-model/1 file"):
        load_model(tmp_path / "foreign.pt")
    images, labels = synthetic_data(n=100, d=64)
    (W, b), _ = train_one("concise", images, labels)
    save_model(tmp_path / "small.pt", "concise", W, b, side=8, params={})
    small = load_model(tmp_path / "small.pt")
    with pytest.raises(ModelFileError, match="model expects 8x8 images .64 pixels., got 784 pixels"):
        small.predict_proba(torch.zeros(2, 784, dtype=torch.uint8))


@pytest.mark.parametrize("kind", models.MODEL_KINDS)
def test_every_kind_is_one_file_layout_and_loads(tmp_path, kind):
    W = torch.linspace(-1, 1, 64 * 10).reshape(64, 10)
    data = model_bytes(kind, W, torch.ones(10), 8, {})
    (tmp_path / "m.pt").write_bytes(data)
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.kind == kind and torch.equal(loaded.W, W) and torch.equal(loaded.b, torch.ones(10))
    assert set(torch.load(tmp_path / "m.pt", weights_only=True)["state"]) == {"W", "b"}


@pytest.mark.parametrize("W_shape, b_shape, side", [((784, 10), (10,), 8), ((64, 9), (10,), 8), ((10, 64), (10,), 8),
                                                   ((64, 10), (9,), 8), ((64, 10), (1, 10), 8)])
def test_weights_that_do_not_fit_the_recorded_input_are_one_line(tmp_path, W_shape, b_shape, side):
    path = tmp_path / "misfit.pt"
    save_model(path, "scratch", torch.zeros(W_shape), torch.zeros(b_shape), side=side, params={})
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert str(info.value) == f"model file {path}: weights do not fit a scratch model of 8x8 inputs"


def test_a_model_file_of_an_unknown_kind_is_damaged(tmp_path):
    path = tmp_path / "other.pt"
    save_model(path, "svm", torch.zeros(64, 10), torch.zeros(10), side=8, params={})
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"model file {path} is damaged: ") and "unknown model kind 'svm'" in message
    assert "\n" not in message
    # the same content handed over as bytes names the path it is given
    with pytest.raises(ModelFileError, match="model file somewhere.pt is damaged: .*unknown model kind 'svm'"):
        model_from_bytes(path.read_bytes(), "somewhere.pt")


def test_a_concise_model_file_in_nn_linears_layout_says_to_train_it_again(tmp_path):
    """A concise file whose state is ``nn.Linear``'s (``1.weight``, ``1.bias``), as an earlier layout wrote it:
    one line saying what it holds and what to do, not a KeyError."""
    path = tmp_path / "concise.pt"
    save_model(path, "concise", torch.zeros(64, 10), torch.zeros(10), side=8, params={})
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state"] = {"1.weight": torch.zeros(10, 64), "1.bias": torch.zeros(10)}
    torch.save(checkpoint, path)
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert str(info.value) == (f"model file {path} holds a concise model as nn.Linear's state, a layout this "
                               "version reads no more; train the concise model again")


def test_the_baseline_is_scikit_learns_fit_as_a_linear_model():
    """``baseline.Fitted.from_sklearn``: ``W = coef_^T``, ``b = intercept_``, so its logits are scikit-learn's
    decision function and its softmax scikit-learn's probabilities; classes other than 0..n-1 are refused."""
    from softmax_regression.models.baseline import Fitted, fit_logistic_regression

    images, labels = synthetic_data(n=500, d=64)
    X = scale_pixels(images)
    fitted = fit_logistic_regression(X.numpy(), labels, C=1.0, max_iter=50, tol=1e-3)
    model = Fitted.from_sklearn(fitted)
    assert model.W.shape == (64, 10) and model.b.shape == (10,) and model.W.dtype == torch.float32
    np.testing.assert_allclose(model(X).numpy(), fitted.decision_function(X.numpy()), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(torch.softmax(model(X), dim=1).numpy(), fitted.predict_proba(X.numpy()), atol=1e-5)
    torch.testing.assert_close(model(X.reshape(-1, 8, 8)), model(X), rtol=0, atol=0)
    shifted = fit_logistic_regression(X.numpy(), labels + 1, C=1.0, max_iter=5, tol=1e-3)
    with pytest.raises(ValueError, match=r"expected classes 0..9, got \["):
        Fitted.from_sklearn(shifted)


def test_baseline_fit_is_the_same_whatever_threads_the_caller_allows():
    """The L-BFGS fit pins BLAS and OpenMP to one thread: a caller (or a machine) with more cores gets
    the same bits (unpinned, the products' sums split by thread count and the weights differ)."""
    from threadpoolctl import threadpool_limits

    from softmax_regression.models.baseline import fit_logistic_regression

    images, labels = synthetic_data(n=3000)
    fits = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            fitted = fit_logistic_regression(scale_pixels(images).numpy(), labels, C=1.0, max_iter=15, tol=1e-3)
        fits.append(fitted.coef_.tobytes() + fitted.intercept_.tobytes())
    assert fits[0] == fits[1]
