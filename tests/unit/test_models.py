"""The chapter's maths in the scratch model, its agreement with the concise one, and the model file."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samples import save_model
from softmax_regression.batches import ShuffledBatches, to_labels
from softmax_regression.features import scale_pixels
from softmax_regression.history import history_csv, read_history_csv
from softmax_regression.losses import LOSSES, cross_entropy_and_grad
from softmax_regression.models import ModelFileError, build_model, initial_weights, load_model
from softmax_regression.models.scratch import cross_entropy, log_softmax, softmax
from softmax_regression.training import TrainingDiverged, train


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
    loss, _ = cross_entropy_and_grad(O, y)
    torch.testing.assert_close(loss, F.cross_entropy(O, y), rtol=0, atol=1e-6)
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
    _, grad = cross_entropy_and_grad(O.detach(), y)
    torch.testing.assert_close(grad * len(O), expected, rtol=0, atol=1e-10)


def synthetic_data(n=2000, d=784, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    prototypes = rng.integers(0, 256, (10, d))
    noise = rng.integers(-60, 60, (n, d))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels


def train_one(kind, images, labels, epochs=1, lr=0.1, weight_decay=0.0, seed=0, batch_size=64, loss="cross_entropy"):
    g = torch.Generator().manual_seed(seed)
    model = build_model(kind, initial_weights(images.shape[1], 10, 0.01, g), lr=lr, weight_decay=weight_decay,
                        loss=loss)
    batches = ShuffledBatches(images, labels, batch_size, g)
    history = train(model, batches, scale_pixels(images[:200]), to_labels(labels[:200]), epochs=epochs,
                    progress=False)
    return model, history


@pytest.mark.parametrize("loss", list(LOSSES))
def test_each_losss_hand_written_gradient_is_autograds(loss):
    """The scratch model's gradient formula for every train.loss against autograd of the same loss,
    and the loss itself against torch's built-in the concise model uses."""
    g = torch.Generator().manual_seed(3)
    O = (torch.randn(32, 10, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    y = torch.randint(0, 10, (32,), generator=g)
    value, grad = LOSSES[loss].scratch(O.detach(), y)
    builtin = LOSSES[loss].concise()(O, y)
    builtin.backward()
    torch.testing.assert_close(value, builtin.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, O.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("weight_decay, loss", [(0.0, "cross_entropy"), (0.01, "cross_entropy"),
                                                (0.0, "squared"), (0.0, "margin"), (0.01, "margin")])
def test_scratch_and_concise_agree_after_one_epoch(weight_decay, loss):
    images, labels = synthetic_data()
    scratch, h_scratch = train_one("scratch", images, labels, weight_decay=weight_decay, loss=loss)
    concise, h_concise = train_one("concise", images, labels, weight_decay=weight_decay, loss=loss)
    W_s, b_s = scratch.weights()
    W_c, b_c = concise.weights()
    assert not torch.equal(W_s, initial_weights(784, 10, 0.01, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(W_s, W_c, rtol=0, atol=1e-5)
    torch.testing.assert_close(b_s, b_c, rtol=0, atol=1e-5)
    assert abs(h_scratch[0].train_loss - h_concise[0].train_loss) < 1e-5


def test_both_models_start_from_the_same_seeded_weights():
    W0 = initial_weights(784, 10, 0.01, torch.Generator().manual_seed(3))
    assert W0.shape == (784, 10)
    assert abs(W0.std().item() - 0.01) < 0.0005 and abs(W0.mean().item()) < 0.001
    scratch, concise = build_model("scratch", W0, lr=0.1), build_model("concise", W0, lr=0.1)
    torch.testing.assert_close(scratch.weights()[0], concise.weights()[0], rtol=0, atol=0)
    assert torch.equal(scratch.weights()[1], torch.zeros(10)) and torch.equal(concise.weights()[1], torch.zeros(10))


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
    """What the background thread prepares is, bit for bit, ``images[order] / 255`` in the seeded order,
    whatever the chunking, with a short last batch."""
    images, labels = synthetic_data(n=1000)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(3))
    expected = scale_pixels(images)[order]
    for chunk_batches in (1, 2, 5):
        batches = ShuffledBatches(images, labels, 96, torch.Generator().manual_seed(3), chunk_batches=chunk_batches)
        got = [(X.clone(), y.clone()) for X, y in batches]
        assert [len(y) for _, y in got] == [96] * 10 + [40]
        assert torch.equal(torch.cat([X for X, _ in got]), expected)
        assert torch.equal(torch.cat([y for _, y in got]), to_labels(labels)[order])
        assert torch.equal(batches.epoch_labels, to_labels(labels)[order])


def test_leaving_an_epoch_early_stops_the_prefetch_thread():
    import threading
    images, labels = synthetic_data(n=2000)
    batches = ShuffledBatches(images, labels, 10, torch.Generator().manual_seed(0), chunk_batches=2)
    for _ in range(3):
        epoch = iter(batches)
        next(epoch)
        epoch.close()
    assert not [t for t in threading.enumerate() if t.name == "batch-prefetch"]
    with pytest.raises(RuntimeError, match="stop here"):
        for i, _ in enumerate(batches):
            if i == 7:
                raise RuntimeError("stop here")
    assert not [t for t in threading.enumerate() if t.name == "batch-prefetch"]


def test_one_epoch_at_a_time():
    images, labels = synthetic_data(n=300)
    batches = ShuffledBatches(images, labels, 64, torch.Generator().manual_seed(0))
    first = iter(batches)
    next(first)
    with pytest.raises(RuntimeError, match="an epoch is still being iterated"):
        next(iter(batches))
    first.close()
    assert len(torch.cat([y for _, y in batches])) == 300  # a closed epoch frees the batches for the next


def test_an_error_preparing_a_batch_is_raised_in_the_training_loop():
    images, labels = synthetic_data(n=300)
    batches = ShuffledBatches(images, labels, 64, torch.Generator().manual_seed(0))

    class Broken:
        def apply_(self, X):
            raise ValueError("standardization broke")

    batches.standardization = Broken()
    with pytest.raises(ValueError, match="standardization broke"):
        list(batches)


def test_concise_cross_entropy_over_the_batch_dimension_is_torchs():
    """The concise model's cross-entropy takes the logits as one ``(1, C, N)`` sample: the same loss and
    gradient as ``F.cross_entropy`` on ``(N, C)``."""
    g = torch.Generator().manual_seed(5)
    O = (torch.randn(64, 10, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    y = torch.randint(0, 10, (64,), generator=g)
    ours = LOSSES["cross_entropy"].concise()(O, y)
    (ours_grad,) = torch.autograd.grad(ours, O)
    theirs = torch.nn.functional.cross_entropy(O, y)
    (theirs_grad,) = torch.autograd.grad(theirs, O)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_concise_steps_are_torch_optim_sgds_to_the_bit(loss):
    """The concise model's update is ``torch.optim.SGD``'s: the same weights, bit for bit, after steps with
    weight decay and a learning rate changed midway, against the chapter's ``zero_grad``/``backward``/``step``."""
    from torch import nn
    g = torch.Generator().manual_seed(0)
    W = initial_weights(784, 10, 0.01, g)
    model = build_model("concise", W, lr=0.1, weight_decay=0.001, loss=loss)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        net[1].weight.copy_(W.T)
        net[1].bias.zero_()
    trainer = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=0.001)
    reference_loss = LOSSES[loss].concise()
    for step in range(30):
        X, y = torch.rand(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)
        if step == 15:
            model.set_lr(0.02)
            trainer.param_groups[0]["lr"] = 0.02
        model.train_step(X, y)
        trainer.zero_grad()
        reference_loss(net(X), y).backward()
        trainer.step()
    assert torch.equal(model.net[1].weight, net[1].weight) and torch.equal(model.net[1].bias, net[1].bias)


@pytest.mark.parametrize("kind", ["scratch", "concise"])
def test_divergence_names_the_epoch(kind):
    images, labels = synthetic_data(n=500)
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch 1: mean train loss is .*lower train.lr"):
        train_one(kind, images, labels, lr=1e6, epochs=3)


def test_nan_input_is_divergence():
    images, labels = synthetic_data(n=300)
    g = torch.Generator().manual_seed(0)
    model = build_model("scratch", initial_weights(784, 10, 0.01, g), lr=0.1)
    model.W[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="epoch 1: mean train loss is nan"):
        train(model, ShuffledBatches(images, labels, 64, g), scale_pixels(images), to_labels(labels), 2,
              progress=False)


def test_history_csv_round_trip():
    images, labels = synthetic_data(n=300)
    _, history = train_one("scratch", images, labels, epochs=2)
    text = history_csv(history)
    assert text.splitlines()[0] == "epoch,train_loss,train_acc,val_acc"
    assert read_history_csv(text) == history


@pytest.mark.parametrize("kind", ["scratch", "concise"])
def test_model_file_round_trip(tmp_path, kind):
    images, labels = synthetic_data(n=300)
    model, _ = train_one(kind, images, labels)
    path = tmp_path / f"{kind}.pt"
    save_model(path, model, side=28, params={"train.lr": 0.1})
    loaded = load_model(path)
    assert loaded.kind == kind and loaded.side == 28 and loaded.class_names[9] == "ankle boot"
    assert loaded.params == {"train.lr": 0.1}
    W, b = model.weights()
    torch.testing.assert_close(loaded.model.weights()[0], W, rtol=0, atol=0)
    torch.testing.assert_close(loaded.model.weights()[1], b, rtol=0, atol=0)
    proba = loaded.predict_proba(torch.from_numpy(images[:5]))
    torch.testing.assert_close(proba.sum(1), torch.ones(5), rtol=0, atol=1e-6)
    # the file loads with weights_only=True: nothing but tensors and plain containers inside
    torch.load(path, weights_only=True)
    # saving twice gives the same bytes
    save_model(tmp_path / "again.pt", model, side=28, params={"train.lr": 0.1})
    assert (tmp_path / "again.pt").read_bytes() == path.read_bytes()
    assert list(tmp_path.glob(".*")) == []


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
    model, _ = train_one("concise", images, labels)
    save_model(tmp_path / "small.pt", model, side=8, params={})
    small = load_model(tmp_path / "small.pt")
    with pytest.raises(ModelFileError, match="model expects 8x8 images .64 pixels., got 784 pixels"):
        small.predict_proba(torch.zeros(2, 784, dtype=torch.uint8))


def test_baseline_fit_is_the_same_whatever_threads_the_caller_allows():
    """The L-BFGS fit pins BLAS and OpenMP to one thread: a caller (or a machine) with more cores gets
    the same bits (unpinned, the products' sums split by thread count and the weights differ)."""
    from threadpoolctl import threadpool_limits

    from softmax_regression.baseline import fit_logistic_regression

    images, labels = synthetic_data(n=3000)
    fits = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            fitted = fit_logistic_regression(scale_pixels(images).numpy(), labels, C=1.0, max_iter=15)
        fits.append(fitted.coef_.tobytes() + fitted.intercept_.tobytes())
    assert fits[0] == fits[1]
