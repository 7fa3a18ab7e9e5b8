"""`fmnist-predict` with the models and the raw test IDX file of the pipeline run on the real data:
pictures of any size and mode, whole IDX files, and the models' own test accuracy."""

import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

from predicting import TEXT_LINE, N, assert_one_line_error, check_ranking, predict, predict_json
from samples import encode_idx
from softmax_regression import CLASS_NAMES
from softmax_regression.data.idx import read_images, read_labels
from softmax_regression.models.file import load_model


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


def test_invert_turns_a_dark_on_light_photo_back(real, ranked, tmp_path):
    project, images, _, _ = real
    light = tmp_path / "light.png"
    Image.fromarray(255 - images[0]).save(light)
    (inverted,) = predict_json("--invert", project / "models/concise.pt", light, cwd=tmp_path)
    assert inverted["top"] == ranked["concise"]["png28"][0]["top"]


def test_real_model_whose_weights_do_not_fit_its_declared_input_shape(real, pictures, tmp_path):
    project, _, _, _ = real
    checkpoint = torch.load(project / "models/concise.pt", weights_only=True)
    assert checkpoint["input_shape"] == [1, 28, 28]
    mismatched = tmp_path / "concise-14.pt"
    torch.save({**checkpoint, "input_shape": [1, 14, 14]}, mismatched)
    assert_one_line_error(predict(mismatched, pictures["png28"][0], cwd=tmp_path),
                          "concise-14.pt", "do not fit", "concise", "14x14")


def test_sixteen_bit_and_palette_pngs_are_converted_not_clipped(real, tmp_path):
    """Test image 0 (an ankle boot) as 8-bit, 16-bit and palette PNGs: the same grey levels, the same answer."""
    from softmax_regression.predicting.inputs import load_inputs

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
