"""`fmnist-predict`: top classes of user images, and one clear line for every bad input.

The error paths run on a freshly initialised model file (fast); the accuracy
tests use the models and the raw test IDX file of the pipeline run on the real
data (slow).
"""

import gzip
import json
import random
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from softmax_regression import CLASS_NAMES
from softmax_regression.idx import encode_idx, read_images, read_labels
from softmax_regression.models import build_model, initial_weights, load_model, save_model

from support import VENV_BIN, clean_env, run

N = 20  # test images written as picture files
TEXT_LINE = re.compile(r"^(?P<input>.+): " + ", ".join(
    rf"(?P<c{i}>[a-z -]+) (?P<p{i}>[01]\.\d{{3}})" for i in range(3)) + "$")


def predict(*args, cwd, module=False):
    cmd = [sys.executable, "-m", "softmax_regression.predict_cli"] if module else [str(VENV_BIN / "fmnist-predict")]
    return run([*cmd, *map(str, args)], cwd, env=clean_env(), check=False, timeout=300)


def predict_json(*args, cwd):
    result = predict("--json", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fmnist-predict: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def check_ranking(entry, k=3):
    top = entry["top"]
    assert len(top) == k
    classes = [t["class"] for t in top]
    probabilities = [t["probability"] for t in top]
    assert len(set(classes)) == k and set(classes) <= set(CLASS_NAMES)
    assert all(0 <= p <= 1 for p in probabilities)
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1 + 1e-5
    return classes[0]


# ---------------------------------------------------------------- fast: a freshly initialised model


@pytest.fixture(scope="module")
def fresh_model(tmp_path_factory):
    """A valid model file with small random weights (no training needed for the error paths)."""
    path = tmp_path_factory.mktemp("fresh") / "fresh.pt"
    W = initial_weights(784, 10, 0.01, torch.Generator().manual_seed(0))
    save_model(path, build_model("scratch", W, lr=0.1), side=28, params={})
    return path


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(path)
    return path


def test_fresh_model_ranks_three_classes_per_image(fresh_model, picture, tmp_path):
    (entry,) = predict_json(fresh_model, picture, cwd=tmp_path)
    assert entry["input"] == str(picture)
    check_ranking(entry)


def test_missing_model_file(picture, tmp_path):
    line = assert_one_line_error(predict(tmp_path / "nope.pt", picture, cwd=tmp_path), "nope.pt", "not found")
    assert "Traceback" not in line


def test_corrupt_model_file(picture, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(random.Random(0).randbytes(4096))
    assert_one_line_error(predict(corrupt, picture, cwd=tmp_path), "corrupt.pt", "not a readable PyTorch file")


def test_truncated_model_file(fresh_model, picture, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(fresh_model.read_bytes()[:200])
    assert_one_line_error(predict(truncated, picture, cwd=tmp_path), "truncated.pt")


def test_pytorch_file_that_is_not_a_model(picture, tmp_path):
    other = tmp_path / "tensor.pt"
    torch.save({"W": torch.zeros(784, 10)}, other)
    assert_one_line_error(predict(other, picture, cwd=tmp_path), "tensor.pt", "softmax-regression-model/1")


def test_fresh_model_whose_weights_do_not_fit_its_input_shape(fresh_model, picture, tmp_path):
    checkpoint = torch.load(fresh_model, weights_only=True)
    mismatched = tmp_path / "mismatched.pt"
    torch.save({**checkpoint, "input_shape": [1, 14, 14]}, mismatched)
    assert_one_line_error(predict(mismatched, picture, cwd=tmp_path), "mismatched.pt", "14x14")


@pytest.mark.parametrize("content", [
    pytest.param(b"just some text\n", id="text"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(100), id="fake-png"),
    pytest.param(b"\x1f\x8bcorrupt gzip", id="corrupt-gzip"),
    pytest.param(encode_idx(np.arange(5, dtype=np.uint8)), id="idx-labels"),
    pytest.param(encode_idx(np.zeros((3, 28, 28), np.uint8))[:-7], id="truncated-idx"),
])
def test_input_that_is_not_an_image(fresh_model, picture, tmp_path, content):
    bad = tmp_path / "input.png"
    bad.write_bytes(content)
    # even after a good picture: nothing is printed for a call that fails
    assert_one_line_error(predict(fresh_model, picture, bad, cwd=tmp_path), "input.png")


def test_truncated_png(fresh_model, picture, tmp_path):
    bad = tmp_path / "half.png"
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)).save(big)
    bad.write_bytes(big.read_bytes()[:2000])
    assert_one_line_error(predict(fresh_model, bad, cwd=tmp_path), "half.png")


def test_missing_image_file(fresh_model, tmp_path):
    assert_one_line_error(predict(fresh_model, tmp_path / "ghost.png", cwd=tmp_path), "ghost.png", "no such file")


# ---------------------------------------------------------------- slow: the models trained on the real data


@pytest.fixture(scope="module")
def real(pipeline_project):
    project = pipeline_project[0]
    images = read_images(project / "data/raw/t10k-images-idx3-ubyte")
    labels = read_labels(project / "data/raw/t10k-labels-idx1-ubyte")
    metrics = json.loads((project / "reports/eval/metrics.json").read_text())
    return project, images, labels, metrics


@pytest.fixture(scope="module")
def pictures(real, tmp_path_factory):
    """The first N test images as PNG / JPEG files of several sizes and modes."""
    _, images, _, _ = real
    root = tmp_path_factory.mktemp("pictures")
    kinds = {
        "png28": lambda im, p: im.save(p.with_suffix(".png")),
        "png100": lambda im, p: im.resize((100, 100), Image.Resampling.BICUBIC).save(p.with_suffix(".png")),
        "rgb60": lambda im, p: im.convert("RGB").resize((60, 60)).save(p.with_suffix(".png")),
        "jpeg28": lambda im, p: im.convert("RGB").save(p.with_suffix(".jpg"), quality=90),
        "jpeg100x77": lambda im, p: im.resize((100, 77)).save(p.with_suffix(".jpeg"), quality=90),
    }
    written = {}
    for kind, write in kinds.items():
        (root / kind).mkdir()
        for i in range(N):
            write(Image.fromarray(images[i]), root / kind / f"test{i:02d}")
        written[kind] = sorted((root / kind).iterdir())
    return written


@pytest.fixture(scope="module")
def ranked(real, pictures, tmp_path_factory):
    """Each model's --json answer for all the pictures at once (one process per model), by kind of picture."""
    project = real[0]
    cwd = tmp_path_factory.mktemp("ranked")
    files = [path for kind in pictures for path in pictures[kind]]
    answers = {}
    for model in ("scratch", "concise"):
        out = predict_json(project / f"models/{model}.pt", *files, cwd=cwd)
        assert [e["input"] for e in out] == [str(path) for path in files]
        answers[model] = {kind: out[i * N:(i + 1) * N] for i, kind in enumerate(pictures)}
    return answers


def model_predictions(project, kind, images):
    model = load_model(project / f"models/{kind}.pt")
    return model.predict_proba(torch.from_numpy(images.reshape(len(images), -1).copy())).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["scratch", "concise"])
def test_lossless_png_gets_exactly_the_models_probabilities(real, ranked, model):
    project, images, _, _ = real
    expected = model_predictions(project, model, images[:N])
    for entry, row in zip(ranked[model]["png28"], expected):
        check_ranking(entry)
        for t in entry["top"]:
            assert t["probability"] == pytest.approx(float(row[CLASS_NAMES.index(t["class"])]), abs=1e-6)
        assert entry["top"][0]["class"] == CLASS_NAMES[int(row.argmax())]
        assert [t["class"] for t in entry["top"]] == [CLASS_NAMES[c] for c in np.argsort(-row, kind="stable")[:3]]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["png100", "rgb60", "jpeg28", "jpeg100x77"])
@pytest.mark.parametrize("model", ["scratch", "concise"])
def test_pictures_of_any_size_and_mode_are_mostly_classified_right(real, ranked, kind, model):
    project, images, labels, _ = real
    top1 = [check_ranking(entry) for entry in ranked[model][kind]]
    assert len(top1) == N
    truth = [CLASS_NAMES[y] for y in labels[:N]]
    on_raw_pixels = [CLASS_NAMES[i] for i in model_predictions(project, model, images[:N]).argmax(axis=1)]
    assert sum(p == t for p, t in zip(top1, truth)) >= 16, list(zip(top1, truth))
    assert sum(p == r for p, r in zip(top1, on_raw_pixels)) >= N - 2, list(zip(top1, on_raw_pixels))


@pytest.mark.slow
def test_the_whole_raw_test_idx_file_scores_the_models_test_accuracy(real, tmp_path):
    project, _, labels, metrics = real
    idx = project / "data/raw/t10k-images-idx3-ubyte"
    out = predict_json(project / "models/concise.pt", idx, cwd=tmp_path)
    assert len(out) == len(labels) == 10_000
    assert [e["input"] for e in out[:3]] == [f"{idx}[0]", f"{idx}[1]", f"{idx}[2]"]
    top1 = [check_ranking(e) for e in out[:200]] + [e["top"][0]["class"] for e in out[200:]]
    accuracy = float(np.mean([p == CLASS_NAMES[y] for p, y in zip(top1, labels)]))
    assert accuracy == metrics["concise"]["test_accuracy"]
    assert float(np.mean([p == CLASS_NAMES[y] for p, y in zip(top1[:100], labels[:100])])) >= 0.75


@pytest.mark.slow
def test_small_gzip_idx_text_output_and_module_entry_point(real, pictures, tmp_path):
    project, images, labels, _ = real
    sample = tmp_path / "sample-idx3-ubyte.gz"
    sample.write_bytes(gzip.compress(encode_idx(images[:12])))
    model = project / "models/concise.pt"
    inputs = [str(sample), str(pictures["png28"][0])]
    expected_names = [f"{sample}[{i}]" for i in range(12)] + [inputs[1]]

    module = predict("--json", "--top", "5", model, *inputs, cwd=tmp_path, module=True)
    assert module.returncode == 0 and module.stderr == ""
    out = json.loads(module.stdout)
    assert [e["input"] for e in out] == expected_names
    for entry in out:
        check_ranking(entry, k=5)
    assert out[0]["top"] == out[12]["top"]  # the same image, from the IDX and from a PNG
    assert sum(e["top"][0]["class"] == CLASS_NAMES[y] for e, y in zip(out, labels[:12])) >= 9

    script = predict(model, *inputs, cwd=tmp_path)  # the installed entry point, text output, top 3
    assert script.returncode == 0 and script.stderr == ""
    lines = script.stdout.splitlines()
    assert len(lines) == 13
    for line, entry in zip(lines, out):
        match = TEXT_LINE.match(line)
        assert match, line
        assert match["input"] == entry["input"]
        assert [match[f"c{i}"] for i in range(3)] == [t["class"] for t in entry["top"][:3]]
        assert [float(match[f"p{i}"]) for i in range(3)] == pytest.approx(
            [t["probability"] for t in entry["top"][:3]], abs=5e-4 + 1e-9)


@pytest.mark.slow
def test_invert_turns_a_dark_on_light_photo_back(real, ranked, tmp_path):
    project, images, _, _ = real
    light = tmp_path / "light.png"
    Image.fromarray(255 - images[0]).save(light)
    (inverted,) = predict_json("--invert", project / "models/concise.pt", light, cwd=tmp_path)
    assert inverted["top"] == ranked["concise"]["png28"][0]["top"]


@pytest.mark.slow
def test_real_model_whose_weights_do_not_fit_its_declared_input_shape(real, pictures, tmp_path):
    project, _, _, _ = real
    checkpoint = torch.load(project / "models/concise.pt", weights_only=True)
    assert checkpoint["input_shape"] == [1, 28, 28]
    mismatched = tmp_path / "concise-14.pt"
    torch.save({**checkpoint, "input_shape": [1, 14, 14]}, mismatched)
    assert_one_line_error(predict(mismatched, pictures["png28"][0], cwd=tmp_path),
                          "concise-14.pt", "do not fit", "concise", "14x14")


# ---- bounded inputs: one line each, bounded memory -------------------------------------------------

def png_header_only(path, width, height):
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb is refused on its header)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def peak_rss_mb(cmd, cwd):
    """Run ``cmd``; its exit status, stderr and peak RSS in MB from the kernel's rusage of that child."""
    import os
    import subprocess

    env = clean_env()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, stderr, usage.ru_maxrss / 1024


def test_a_huge_picture_is_refused_on_its_header(fresh_model, tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 30000, 30000)
    assert_one_line_error(predict(fresh_model, bomb, cwd=tmp_path), str(bomb), "900000000 pixels", "over the")
    big = png_header_only(tmp_path / "big.png", 9000, 9000)  # under Pillow's own cap, over ours
    assert_one_line_error(predict(fresh_model, big, cwd=tmp_path), str(big), "9000x9000 pixels", "over the")


def test_a_gzip_bomb_idx_is_refused_with_bounded_memory(fresh_model, picture, tmp_path):
    """1 MB of gzip that inflates to 1 GB of IDX: refused once the cap (128 MB) is passed, not inflated whole."""
    from softmax_regression.predict import MAX_IDX_BYTES

    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    count, side = 1_000_000, 32  # 1 GB of pixels
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(b"\x00\x00\x08\x03" + count.to_bytes(4, "big") + side.to_bytes(4, "big") * 2)
        zeros = b"\0" * (1 << 20)
        for _ in range(count * side * side >> 20):
            f.write(zeros)
    assert bomb.stat().st_size < 2 << 20
    cli = str(VENV_BIN / "fmnist-predict")
    code, _, baseline = peak_rss_mb([cli, str(fresh_model), str(picture)], tmp_path)
    assert code == 0
    code, stderr, rss = peak_rss_mb([cli, str(fresh_model), str(bomb)], tmp_path)
    assert code == 1 and stderr.count("\n") == 1, stderr
    assert str(bomb) in stderr and "decompresses to more than" in stderr
    # what a normal call takes (torch), plus the cap and the gzip file, with room: not the gigabyte
    assert rss < baseline + 2 * MAX_IDX_BYTES / 2**20 + 64, f"peak RSS {rss:.0f} MB against {baseline:.0f} MB"


def test_too_many_images_is_one_line(fresh_model, tmp_path):
    from softmax_regression.predict import MAX_IMAGES

    many = tmp_path / "many-idx3-ubyte"
    many.write_bytes(encode_idx(np.zeros((MAX_IMAGES + 1, 4, 4), dtype=np.uint8)))
    assert_one_line_error(predict(fresh_model, many, cwd=tmp_path), str(many), f"over the {MAX_IMAGES} allowed")


@pytest.mark.parametrize("height, width", [(0, 7), (5, 0), (0, 1 << 30)])
def test_images_without_a_pixel_are_one_line(fresh_model, tmp_path, height, width):
    """An IDX header alone can declare 100,000 images of 0 x 2**30 pixels: refused on the header, not resized
    (which costs the width, per image: the fuzz test found one that ran for many minutes)."""
    empty = tmp_path / "empty-idx3-ubyte"
    empty.write_bytes(b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (100_000, height, width)))
    assert_one_line_error(predict(fresh_model, empty, cwd=tmp_path), str(empty),
                          f"images of {height}x{width} pixels hold no pixel")


@pytest.mark.parametrize("scheme, package", [("s3://bucket/model", "boto3"),
                                             ("gs://bucket/model", "google-cloud-storage")])
def test_a_model_uri_whose_store_client_is_not_installed_names_the_package(tmp_path, picture, scheme, package):
    assert_one_line_error(predict(scheme, picture, cwd=tmp_path), scheme, f"pip install {package}")


@pytest.mark.parametrize("source", ["models:/fashion-mnist-softmax@champion", "runs:/0123456789abcdef/classifier"])
def test_a_model_uri_outside_any_project_is_one_line_and_creates_no_store(tmp_path, picture, source):
    """Outside a project (no mlflow.db, no MLFLOW_TRACKING_URI) a store URI names the missing store; it
    does not create an empty mlflow.db and then fail to find the model in it."""
    line = assert_one_line_error(predict(source, picture, cwd=tmp_path), f"no MLflow store at {tmp_path / 'mlflow.db'}",
                                 "set MLFLOW_TRACKING_URI")
    assert "Traceback" not in line
    assert [p.name for p in tmp_path.iterdir()] == ["picture.png"]


@pytest.mark.slow
def test_sixteen_bit_and_palette_pngs_are_converted_not_clipped(real, tmp_path):
    """Test image 0 (an ankle boot) as 8-bit, 16-bit and palette PNGs: the same grey levels, the same answer."""
    from softmax_regression.predict import load_inputs

    project, images, labels, _ = real
    image = images[0]
    eight = tmp_path / "eight.png"
    Image.fromarray(image).save(eight)
    sixteen = tmp_path / "sixteen.png"
    Image.fromarray(image.astype(np.uint16) * 257).save(sixteen)
    palette = tmp_path / "palette.png"
    Image.fromarray(image).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(palette)
    assert Image.open(sixteen).mode.startswith("I") and Image.open(palette).mode == "P"
    for path in (sixteen, palette):
        assert np.array_equal(load_inputs(path, 28)[0].pixels, image.reshape(-1)), path
    out = predict_json(project / "models/scratch.pt", eight, sixteen, palette, cwd=tmp_path)
    assert {entry["top"][0]["class"] for entry in out} == {CLASS_NAMES[labels[0]]} == {"ankle boot"}
