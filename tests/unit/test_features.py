"""data.normalize and train.schedule: the statistics, the transform, its place in the model file, the
learning rates against torch's own schedulers, and the two models still agreeing under both."""

import math

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from samples import chapter_model, encode_idx
from softmax_regression.data.batches import ShuffledBatches, to_labels
from softmax_regression.data.features import Standardization, features, fold_into_linear, scale_pixels
from softmax_regression.data.idx import parse_idx
from softmax_regression.models import concise, scratch
from softmax_regression.models.file import ModelFileError, load_model, model_bytes
from softmax_regression.params import shaping_record
from softmax_regression.tracking.logged_models import as_torch_module
from softmax_regression.training import SCHEDULES
from softmax_regression.training.loop import initial_weights, learning_rates, train


def synthetic_images(n=600, d=49, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, d), dtype=np.uint8)
    images[:, 0] = 0          # a pixel that never changes, as Fashion-MNIST's corners nearly do
    images[:, 1] //= 8        # a dim one
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    return images, labels


@pytest.mark.filterwarnings("error")
def test_the_read_only_pixels_of_an_idx_file_are_scaled_without_a_warning():
    images, _ = synthetic_images(n=3)
    pixels = parse_idx(encode_idx(images))
    assert not pixels.flags.writeable
    assert torch.equal(scale_pixels(pixels), torch.from_numpy(images.astype(np.float32) / 255))


def test_per_pixel_statistics_are_scikit_learns_standard_scaler():
    images, _ = synthetic_images()
    std = Standardization.fit(images, "per_pixel", chunk=128)  # several chunks
    scaler = StandardScaler().fit(images.astype(np.float64) / 255)
    np.testing.assert_allclose(std.mean.numpy(), scaler.mean_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(std.std.numpy(), scaler.scale_, rtol=1e-5)
    assert std.std[0] == 1.0  # the constant pixel is centred, not divided by 0
    z = features(images, std).numpy()
    np.testing.assert_allclose(z, scaler.transform(images.astype(np.float64) / 255), atol=1e-5)


def test_global_statistics_are_one_mean_and_one_deviation_over_every_pixel():
    images, _ = synthetic_images()
    std = Standardization.fit(images, "global")
    x = images.astype(np.float64) / 255
    assert std.mean.shape == (1,) and std.std.shape == (1,)
    assert std.mean.item() == pytest.approx(x.mean(), rel=1e-6)
    assert std.std.item() == pytest.approx(x.std(), rel=1e-6)
    z = features(images, std)
    assert abs(z.mean().item()) < 1e-5 and z.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-5)


def test_none_is_the_chapters_pixels_over_255():
    images, _ = synthetic_images()
    assert Standardization.fit(images, "none") is None
    assert torch.equal(features(images, None), torch.from_numpy(images.astype(np.float32) / 255))
    assert torch.equal(features(torch.from_numpy(images), None), features(images, None))
    with pytest.raises(ValueError, match="unknown normalization 'zscore'"):
        Standardization.fit(images, "zscore")


@pytest.mark.parametrize("mode", ["global", "per_pixel"])
def test_folding_gives_a_linear_model_on_raw_pixels_with_the_same_logits(mode):
    images, _ = synthetic_images()
    std = Standardization.fit(images, mode)
    g = torch.Generator().manual_seed(1)
    W, b = torch.randn(images.shape[1], 10, generator=g), torch.randn(10, generator=g)
    W_raw, b_raw = fold_into_linear(W, b, std)
    x = scale_pixels(images)
    torch.testing.assert_close(x @ W_raw + b_raw, features(images, std) @ W + b, rtol=1e-4, atol=1e-4)
    assert fold_into_linear(W, b, None) == (W, b)


@pytest.mark.parametrize("mode", ["global", "per_pixel"])
def test_the_model_file_carries_the_statistics_and_every_user_applies_them(tmp_path, mode):
    """Evaluate and fmnist-predict (``predict_proba`` on uint8), the pyfunc (``proba_of_scaled`` on [0, 1])
    and MLflow's PyTorch flavour (weights folded) all see what training saw."""
    images, _ = synthetic_images(d=16)
    std = Standardization.fit(images, mode)
    net = scratch.Net(initial_weights(16, 10, 1.0, torch.Generator().manual_seed(0)), torch.linspace(-1, 1, 10))
    path = tmp_path / "model.pt"
    path.write_bytes(model_bytes("scratch", net.W, net.b, 4, {"data.normalize": mode}, std))
    loaded = load_model(path)
    assert loaded.standardization.mode == mode
    assert torch.equal(loaded.standardization.mean, std.mean) and torch.equal(loaded.standardization.std, std.std)
    expected = torch.softmax(net(features(images, std)), dim=1)
    torch.testing.assert_close(loaded.predict_proba(torch.from_numpy(images)), expected)
    x = scale_pixels(images)
    torch.testing.assert_close(loaded.proba_of_scaled(x), expected)
    assert torch.equal(x, scale_pixels(images)), "the caller's features were changed in place"
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(as_torch_module(loaded)(x), dim=1),
                                   expected, rtol=1e-4, atol=1e-5)


DEFAULT_MODEL_FILE_SHA256 = {
    "scratch": "8cb810b3a69fcfadb784cfa088f00cc6812436ad6302fba8aadb59ae5be11042",
    "concise": "c160a0cd12d35e6b9dabcd002391c1e76f36799cfe8d8b227297c09050121b50",
}
"""SHA-256 of the model file :func:`fixed_default_model` gives with the default options, on the pinned stack
(torch 2.14.1): an option at its default must not change a model file's bytes. What may change it
legitimately: a deliberate change of the model file format (bump ``FILE_FORMAT`` then), or a torch upgrade
whose ``torch.save`` writes another archive (zip layout, pickle, ``.format_version``, serialization id).
Either changes every model file's SHA-256, by which MLflow runs are found (tag ``model_sha256``) and DVC
sees the train stages' outs as changed, so update this on purpose, never to make the test pass."""


def fixed_default_model(kind: str):
    """A ``kind`` model's weights as its own code holds and hands them out (``net.W``, ``net.b``;
    ``concise.weights``), distinct and exactly representable (a transposed or reordered W shows), and the
    ``(W, b)`` they hold, n_features x n_classes."""
    W = (torch.arange(160, dtype=torch.float32).reshape(16, 10) - 80) / 64
    b = torch.arange(10, dtype=torch.float32) / 8 - 0.5
    if kind == "scratch":
        net = scratch.Net(W, b)
        held = (net.W, net.b)
    else:
        net = concise.net(W)
        with torch.no_grad():
            net[1].bias += b
        held = concise.weights(net)
    return held, W, b


@pytest.mark.parametrize("kind", ["scratch", "concise"])
def test_a_default_model_file_holds_no_standardization_and_no_new_params(kind):
    """The defaults write the bytes they wrote before the options existed."""
    import hashlib
    import io

    record = shaping_record({"train.lr": 0.1, "train.schedule": "constant", "data.normalize": "none"})
    assert record == {"train.lr": 0.1}
    assert shaping_record({"train.schedule": "cosine", "data.normalize": "global"}) == {
        "train.schedule": "cosine", "data.normalize": "global"}
    (held_W, held_b), W, b = fixed_default_model(kind)
    data = model_bytes(kind, held_W, held_b, 4, record)
    # The file, rebuilt by hand as the code before the options wrote it: no "standardize" in preprocessing,
    # no data.normalize or train.schedule in params, every key in its place and order; every kind's state
    # is its W (n_features x n_classes, row-major) and b.
    state = {"W": W, "b": b}
    expected = {
        "format": "softmax-regression-model/1",
        "kind": kind,
        "state": state,
        "input_shape": [1, 4, 4],
        "class_names": ["t-shirt", "trouser", "pullover", "dress", "coat",
                        "sandal", "shirt", "sneaker", "bag", "ankle boot"],
        "preprocessing": {"resize": 4, "dtype": "uint8", "scale": "divide by 255", "flatten": "row-major"},
        "params": {"train.lr": 0.1},
    }
    buffer = io.BytesIO()
    torch.save(expected, buffer)
    assert data == buffer.getvalue()
    # ... and the very bytes, on this stack (what the reconstruction above cannot see: torch.save's own output)
    assert hashlib.sha256(data).hexdigest() == DEFAULT_MODEL_FILE_SHA256[kind]
    checkpoint = torch.load(io.BytesIO(data), weights_only=True)
    assert "standardize" not in checkpoint["preprocessing"]


def test_damaged_statistics_in_a_model_file_are_one_line(tmp_path):
    images, _ = synthetic_images(d=16)
    std = Standardization.fit(images, "per_pixel")
    wrong = Standardization("per_pixel", std.mean[:8], std.std[:8])  # statistics of another input size
    path = tmp_path / "model.pt"
    path.write_bytes(model_bytes("scratch", torch.zeros(16, 10), torch.zeros(10), 4, {}, wrong))
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert "damaged" in str(info.value) and "do not fit 16 features" in str(info.value)
    assert "\n" not in str(info.value)


# ---- train.schedule ------------------------------------------------------------------------------


def torch_schedule(lr: float, epochs: int, schedule: str) -> list[float]:
    """The learning rate per epoch as torch's own schedulers give it, stepped once per epoch."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    if schedule == "step":
        milestones = sorted({m for m in (math.ceil(epochs / 2), math.ceil(3 * epochs / 4)) if 0 < m < epochs})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    elif schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.0)
    else:
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("epochs", [1, 2, 3, 4, 10, 30])
def test_learning_rates_are_torchs_schedulers(schedule, epochs):
    ours = learning_rates(0.3, epochs, schedule)
    assert len(ours) == epochs and ours[0] == 0.3
    np.testing.assert_allclose(ours, torch_schedule(0.3, epochs, schedule), rtol=1e-9, atol=1e-12)


def test_the_shapes_of_the_schedules():
    assert learning_rates(0.1, 10, "constant") == [0.1] * 10
    step = learning_rates(1.0, 10, "step")
    assert step[:5] == [1.0] * 5 and step[5:8] == pytest.approx([0.1] * 3) and step[8:] == pytest.approx([0.01] * 2)
    cosine = learning_rates(1.0, 10, "cosine")
    assert all(a > b > 0 for a, b in zip(cosine, cosine[1:])) and cosine[5] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        learning_rates(0.1, 10, "linear")


def test_train_steps_both_models_at_each_epochs_learning_rate():
    """``train`` runs one epoch per learning rate of ``lrs`` and hands each epoch's to every step of it; the
    concise model's step sets it on its ``torch.optim.SGD``."""
    images, labels = synthetic_images()
    lrs = learning_rates(0.5, 4, "step")
    seen: dict[str, list[float]] = {}
    for kind in ("scratch", "concise"):
        W = torch.zeros(images.shape[1], 10)
        if kind == "concise":
            net = concise.net(W)
            optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
            step = concise.sgd_step(net, concise.LOSSES["cross_entropy"](), optimizer)
        else:
            net, step, _ = chapter_model(kind, W, lr=0.5)
        seen[kind] = []

        def recording(X, y, lr, step=step, kind=kind):
            seen[kind].append(lr)
            return step(X, y, lr)

        g = torch.Generator().manual_seed(0)
        history = train(net, recording, ShuffledBatches(images, labels, 100, g), scale_pixels(images),
                        to_labels(labels), lrs, kind, progress=False)
        assert [r.epoch for r in history] == [1, 2, 3, 4]
        if kind == "concise":
            assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(0.005)]
    batches_per_epoch = 6  # 600 images in batches of 100
    assert seen["scratch"] == seen["concise"] == [lr for lr in lrs for _ in range(batches_per_epoch)]
    short = train(net, step, ShuffledBatches(images, labels, 100, g), scale_pixels(images), to_labels(labels),
                  [0.1] * 3, "concise", progress=False)
    assert len(short) == 3  # as many epochs as learning rates


@pytest.mark.parametrize("mode", ["none", "per_pixel"])
@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_scratch_and_concise_agree_under_a_schedule_and_standardized_inputs(mode, schedule):
    images, labels = synthetic_images(n=1000)
    std = Standardization.fit(images, mode)
    weights = {}
    for kind in ("scratch", "concise"):
        g = torch.Generator().manual_seed(3)
        W = initial_weights(images.shape[1], 10, 0.01, g)
        net, step, held = chapter_model(kind, W, lr=0.05)
        train(net, step, ShuffledBatches(images, labels, 64, g, standardization=std), features(images, std),
              to_labels(labels), learning_rates(0.05, 5, schedule), kind, progress=False)
        weights[kind] = held()
    for ours, theirs in zip(weights["scratch"], weights["concise"]):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
