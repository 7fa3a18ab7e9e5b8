"""The processed splits as the train, evaluate and report stages read them: a damaged file is an error
naming it, never a numpy message about no file in particular or labels past the ten classes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from softmax_regression.data.splits import Split, load_split, write_splits


@pytest.fixture
def processed(tmp_path):
    images = np.arange(20 * 16, dtype=np.uint8).reshape(20, 16)
    labels = (np.arange(20) % 10).astype(np.uint8)
    write_splits(tmp_path, {"train": Split(images, labels), "val": Split(images[:10], labels[:10]),
                            "test": Split(images[:5], labels[:5])}, side=4)
    return tmp_path


def test_written_splits_load_back(processed):
    split = load_split(processed, "train")
    assert split.images.shape == (20, 16) and split.labels.tolist() == [i % 10 for i in range(20)]
    assert json.loads((processed / "meta.json").read_text())["side"] == 4


def truncate(path):
    path.write_bytes(path.read_bytes()[:-7])


@pytest.mark.parametrize("damage, fragment", [
    (truncate, "Failed to read all data for array"),
    (lambda path: path.write_bytes(b""), "No data left in file"),
    (lambda path: path.write_bytes(b"not an array at all"), "pickled (object) data"),
], ids=["truncated", "empty", "foreign"])
@pytest.mark.parametrize("part", ["images", "labels"])
def test_a_damaged_array_is_named_with_what_to_do(processed, damage, fragment, part):
    path = processed / f"train_{part}.npy"
    damage(path)
    with pytest.raises(ValueError) as info:
        load_split(processed, "train")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path} is damaged (") and fragment in message
    assert message.endswith("; run the preprocess stage again")


@pytest.mark.parametrize("labels, shown", [
    (np.array([0, 1, 10, 3, 4]), "0..10"),
    (np.array([0, -1, 2, 3, 4]), "-1..4"),
    (np.array([0.0, 1.0, 2.0, 3.0, 4.0]), "0.0..4.0"),
], ids=["past the classes", "negative", "floats"])
def test_labels_outside_the_ten_classes_are_refused(processed, labels, shown):
    np.save(processed / "test_labels.npy", labels, allow_pickle=False)
    with pytest.raises(ValueError) as info:
        load_split(processed, "test")
    assert str(info.value) == (f"{processed / 'test_labels.npy'} is damaged (labels {shown}, expected integers "
                               "0..9); run the preprocess stage again")


def test_an_empty_split_loads(processed):
    write_splits(processed, {"val": Split(np.zeros((0, 16), np.uint8), np.zeros(0, np.uint8))}, side=4)
    assert len(load_split(processed, "val")) == 0
