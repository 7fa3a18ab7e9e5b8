"""`fmnist-predict` on a freshly initialised model file: top classes of user images, and one clear line
for every bad input. (The models trained on the real data: ``integration/test_predict_real_models.py``.)

The command runs in this interpreter (``predict_in_process``: click's runner, exit code, stdout and stderr
apart), except where the process is the point: the installed entry point and ``python -m``, and the peak
memory of a call, which only the kernel's account of a process of its own can tell.
"""

import gzip
import json
import os
import random
import subprocess
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from predicting import assert_one_line_error, check_ranking, predict, predict_in_process, predict_json
from samples import encode_idx, save_model
from softmax_regression import CLASS_NAMES
from softmax_regression.models.file import load_model
from softmax_regression.training.loop import initial_weights
from support import VENV_BIN, clean_env


@pytest.fixture(scope="module")
def fresh_model(tmp_path_factory):
    """A valid model file with small random weights (no training needed for the error paths)."""
    path = tmp_path_factory.mktemp("fresh") / "fresh.pt"
    W = initial_weights(784, 10, 0.01, torch.Generator().manual_seed(0))
    save_model(path, "scratch", W, torch.zeros(10), side=28, params={})
    return path


def write_picture(path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def picture(tmp_path):
    return write_picture(tmp_path / "picture.png")


def run_measured(cmd, cwd):
    """Run ``cmd`` in a process of its own: its answer, and its peak RSS in MB from the kernel's rusage of
    that child alone."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:  # no pipe to fill
        process = subprocess.Popen(cmd, cwd=cwd, env=clean_env(), stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)  # Popen.wait would reap the child without its rusage
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        answer = subprocess.CompletedProcess(cmd, process.returncode, stdout.read(), stderr.read())
    return answer, usage.ru_maxrss / 1024


@pytest.fixture(scope="module")
def installed_call(fresh_model, tmp_path_factory):
    """``fmnist-predict --json`` (the entry point pip installed) on one picture, in a process of its own, run
    once for the module: (the picture, the answer, the peak RSS in MB: what a normal call takes)."""
    cwd = tmp_path_factory.mktemp("installed")
    picture = write_picture(cwd / "picture.png")
    result, peak_mb = run_measured([str(VENV_BIN / "fmnist-predict"), "--json", str(fresh_model), str(picture)], cwd)
    return picture, result, peak_mb


def test_fresh_model_ranks_three_classes_per_image(fresh_model, picture, tmp_path):
    """The three most probable classes of the picture with their probabilities, as the model file defines
    them, worked out here: the picture's grey levels as they are (no inversion unless ``--invert``), row by
    row, divided by 255, then softmax(x W + b)."""
    (entry,) = predict_json(fresh_model, picture, cwd=tmp_path, in_process=True)
    assert entry["input"] == str(picture)
    check_ranking(entry)
    model = load_model(fresh_model)
    levels = np.asarray(Image.open(picture))  # a greyscale PNG, 28 x 28: no conversion or resize to undo
    assert levels.shape == (28, 28) and levels.dtype == np.uint8
    x = levels.reshape(-1) / 255.0
    logits = x @ model.W.double().numpy() + model.b.double().numpy()
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    top = np.argsort(-probabilities)[:3]
    assert [t["class"] for t in entry["top"]] == [CLASS_NAMES[c] for c in top]
    assert [t["probability"] for t in entry["top"]] == pytest.approx(probabilities[top].tolist(), abs=1e-6)


def test_the_installed_command_answers_as_the_command_does_in_process(fresh_model, installed_call):
    """The entry point pip installed, in a process of its own: the same JSON, nothing on stderr."""
    picture, result, _ = installed_call
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout) == predict_json(fresh_model, picture, cwd=picture.parent, in_process=True)


def test_missing_model_file(picture, tmp_path):
    line = assert_one_line_error(predict_in_process(tmp_path / "nope.pt", picture, cwd=tmp_path), "nope.pt",
                                 "not found")
    assert "Traceback" not in line


@pytest.mark.parametrize("kind", ["a directory", "a named pipe (FIFO)"])
def test_a_model_that_is_no_regular_file_says_what_it_is(picture, tmp_path, kind):
    """Not "not found" for a folder that is there; a named pipe is not opened (it would block)."""
    model = tmp_path / "models"
    model.mkdir() if kind == "a directory" else os.mkfifo(model)
    assert_one_line_error(predict_in_process(model, picture, cwd=tmp_path),
                          f"model file {model} is {kind}, not a regular file")


def test_calibrated_and_a_temperature_exclude_each_other(picture, tmp_path):
    assert_one_line_error(
        predict_in_process("models:/fashion-mnist-softmax@champion", picture, "--calibrated", "--temperature", "1.2",
                           cwd=tmp_path),
        "--calibrated and --temperature exclude each other")
    assert not (tmp_path / "mlflow.db").exists()


def test_the_module_entry_point_fails_in_one_line(picture, tmp_path):
    """``python -m softmax_regression.predicting.cli`` in a process of its own: exit status 1, one line, no
    traceback."""
    line = assert_one_line_error(predict(tmp_path / "nope.pt", picture, cwd=tmp_path, module=True), "nope.pt",
                                 "not found")
    assert "Traceback" not in line


def test_corrupt_model_file(picture, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(random.Random(0).randbytes(4096))
    assert_one_line_error(predict_in_process(corrupt, picture, cwd=tmp_path), "corrupt.pt",
                          "not a readable PyTorch file")


def test_truncated_model_file(fresh_model, picture, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(fresh_model.read_bytes()[:200])
    assert_one_line_error(predict_in_process(truncated, picture, cwd=tmp_path), "truncated.pt")


def test_pytorch_file_that_is_not_a_model(picture, tmp_path):
    other = tmp_path / "tensor.pt"
    torch.save({"W": torch.zeros(784, 10)}, other)
    assert_one_line_error(predict_in_process(other, picture, cwd=tmp_path), "tensor.pt",
                          "softmax-regression-model/1")


def test_fresh_model_whose_weights_do_not_fit_its_input_shape(fresh_model, picture, tmp_path):
    checkpoint = torch.load(fresh_model, weights_only=True)
    mismatched = tmp_path / "mismatched.pt"
    torch.save({**checkpoint, "input_shape": [1, 14, 14]}, mismatched)
    assert_one_line_error(predict_in_process(mismatched, picture, cwd=tmp_path), "mismatched.pt", "14x14")


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
    assert_one_line_error(predict_in_process(fresh_model, picture, bad, cwd=tmp_path), "input.png")


def test_truncated_png(fresh_model, picture, tmp_path):
    bad = tmp_path / "half.png"
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)).save(big)
    bad.write_bytes(big.read_bytes()[:2000])
    assert_one_line_error(predict_in_process(fresh_model, bad, cwd=tmp_path), "half.png")


def test_missing_image_file(fresh_model, tmp_path):
    assert_one_line_error(predict_in_process(fresh_model, tmp_path / "ghost.png", cwd=tmp_path), "ghost.png",
                          "no such file")


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


def test_a_huge_picture_is_refused_on_its_header(fresh_model, tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 30000, 30000)
    assert_one_line_error(predict_in_process(fresh_model, bomb, cwd=tmp_path), str(bomb), "900000000 pixels",
                          "over the")
    big = png_header_only(tmp_path / "big.png", 9000, 9000)  # under Pillow's own cap, over ours
    assert_one_line_error(predict_in_process(fresh_model, big, cwd=tmp_path), str(big), "9000x9000 pixels",
                          "over the")


def test_a_gzip_bomb_idx_is_refused_with_bounded_memory(fresh_model, installed_call, tmp_path):
    """1 MB of gzip that inflates to 1 GB of IDX: refused once the cap (128 MB) is passed, not inflated whole.
    The file is gzip members end to end (as ``cat a.gz b.gz`` makes; one stream to a reader), a header's then
    one compressed megabyte of zeros repeated: deflating the gigabyte would take seconds."""
    from softmax_regression.predicting.inputs import MAX_IDX_BYTES

    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    count, side = 1_000_000, 32  # 1 GB of pixels
    header = b"\x00\x00\x08\x03" + count.to_bytes(4, "big") + side.to_bytes(4, "big") * 2
    megabyte_of_zeros = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)
    bomb.write_bytes(gzip.compress(header, mtime=0) + megabyte_of_zeros * (count * side * side >> 20))
    assert bomb.stat().st_size < 2 << 20
    _, normal, baseline = installed_call
    assert normal.returncode == 0, normal.stderr
    result, rss = run_measured([str(VENV_BIN / "fmnist-predict"), str(fresh_model), str(bomb)], tmp_path)
    assert_one_line_error(result, str(bomb), "decompresses to more than")
    # what a normal call takes (torch), plus the cap and the gzip file, with room: not the gigabyte
    assert rss < baseline + 2 * MAX_IDX_BYTES / 2**20 + 64, f"peak RSS {rss:.0f} MB against {baseline:.0f} MB"


def test_too_many_images_is_one_line(fresh_model, tmp_path):
    from softmax_regression.predicting.inputs import MAX_IMAGES

    many = tmp_path / "many-idx3-ubyte"
    many.write_bytes(encode_idx(np.zeros((MAX_IMAGES + 1, 4, 4), dtype=np.uint8)))
    assert_one_line_error(predict_in_process(fresh_model, many, cwd=tmp_path), str(many),
                          f"over the {MAX_IMAGES} allowed")


@pytest.mark.parametrize("height, width", [(0, 7), (5, 0), (0, 1 << 30)])
def test_images_without_a_pixel_are_one_line(fresh_model, tmp_path, height, width):
    """An IDX header alone can declare 100,000 images of 0 x 2**30 pixels: refused on the header, not resized
    (which costs the width, per image: the fuzz test found one that ran for many minutes)."""
    empty = tmp_path / "empty-idx3-ubyte"
    empty.write_bytes(b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (100_000, height, width)))
    assert_one_line_error(predict_in_process(fresh_model, empty, cwd=tmp_path), str(empty),
                          f"images of {height}x{width} pixels hold no pixel")


@pytest.mark.parametrize("scheme, package", [("s3://bucket/model", "boto3"),
                                             ("gs://bucket/model", "google-cloud-storage")])
def test_a_model_uri_whose_store_client_is_not_installed_names_the_package(tmp_path, picture, scheme, package):
    assert_one_line_error(predict_in_process(scheme, picture, cwd=tmp_path), scheme, f"pip install {package}")


@pytest.mark.parametrize("source", ["models:/fashion-mnist-softmax@champion", "runs:/0123456789abcdef/classifier"])
def test_a_model_uri_outside_any_project_is_one_line_and_creates_no_store(tmp_path, picture, source):
    """Outside a project (no mlflow.db, no MLFLOW_TRACKING_URI) a store URI names the missing store; it
    does not create an empty mlflow.db and then fail to find the model in it."""
    line = assert_one_line_error(predict_in_process(source, picture, cwd=tmp_path),
                                 f"no MLflow store at {tmp_path / 'mlflow.db'}", "set MLFLOW_TRACKING_URI")
    assert "Traceback" not in line
    assert [p.name for p in tmp_path.iterdir()] == ["picture.png"]


def test_a_temperature_changes_the_probabilities_not_the_ranking(tmp_path, picture):
    path = tmp_path / "sharp.pt"  # weights large enough for probabilities far from uniform
    W = initial_weights(784, 10, 0.5, torch.Generator().manual_seed(1))
    save_model(path, "scratch", W, torch.zeros(10), side=28, params={})
    (plain,) = predict_json(path, picture, "--top", "10", cwd=tmp_path, in_process=True)
    (warm,) = predict_json(path, picture, "--top", "10", "--temperature", "3", cwd=tmp_path, in_process=True)
    assert [t["class"] for t in warm["top"]] == [t["class"] for t in plain["top"]]
    assert warm["top"][0]["probability"] < plain["top"][0]["probability"]  # softer at both ends
    assert warm["top"][-1]["probability"] > plain["top"][-1]["probability"]
    assert sum(t["probability"] for t in warm["top"]) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("model", ["model file", "runs:/0123456789abcdef/classifier"])
def test_calibrated_needs_a_registered_version(fresh_model, picture, tmp_path, model):
    """A run carries no temperature (evaluate tags the versions it registers): refused before anything loads."""
    source = fresh_model if model == "model file" else model
    assert_one_line_error(predict_in_process(source, picture, "--calibrated", cwd=tmp_path),
                          "--calibrated reads the temperature of a registered version",
                          "for a model file or a runs:/ URI give --temperature")


def test_ctrl_c_while_loading_is_one_line_and_exit_130(picture, tmp_path):
    """Interrupted while it waits for the tracking server (one that took the connection and never answers):
    one line and exit 130, as a stage says it, not click's ``Aborted!`` and exit 1."""
    import signal
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        process = subprocess.Popen(
            [str(VENV_BIN / "fmnist-predict"), "models:/fashion-mnist-softmax@champion", str(picture)], cwd=tmp_path,
            env=clean_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{server.getsockname()[1]}"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            connection, _ = server.accept()  # its health check: the process now waits for an answer
            with connection:
                process.send_signal(signal.SIGINT)
                stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 130, stderr
    assert stderr.splitlines() == ["fmnist-predict: interrupted"]
    assert stdout == ""
