"""From the four raw IDX files to flattened uint8 splits that training reads in one go.

The splits stay uint8 on disk (47 MB for all 70,000 images, as the chapter's
784-pixel vectors); the model code turns them into floats in [0, 1] once,
in memory, instead of per sample as ``ToTensor`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softmax_regression import CLASS_NAMES
from softmax_regression.data.idx import read_images, read_labels
from softmax_regression.errors import one_line

N_TRAIN, N_TEST, SIDE = 60_000, 10_000, 28
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    images: np.ndarray
    """uint8 ``[N, side*side]``, row-major pixels of each image."""
    labels: np.ndarray
    """uint8 ``[N]`` class indices."""

    def __len__(self) -> int:
        return len(self.labels)


def load_raw(raw_dir: str | Path) -> tuple[Split, Split]:
    """The official training and test sets as ``[N, 28, 28]`` uint8 images, validated."""
    raw_dir = Path(raw_dir)
    train = Split(read_images(raw_dir / "train-images-idx3-ubyte", N_TRAIN),
                  read_labels(raw_dir / "train-labels-idx1-ubyte", N_TRAIN))
    test = Split(read_images(raw_dir / "t10k-images-idx3-ubyte", N_TEST),
                 read_labels(raw_dir / "t10k-labels-idx1-ubyte", N_TEST))
    return train, test


def resize_images(images: np.ndarray, side: int, chunk: int = 2048) -> np.ndarray:
    """``[N, h, w]`` uint8 images resized to ``side x side`` (bilinear, antialiased), still uint8.

    The chapter's optional ``transforms.Resize``; applied once here instead of per sample, a chunk of
    images at a time, so the float copies stay small beside the uint8 result.
    """
    if images.shape[1:] == (side, side):
        return images
    import torch  # only a resize needs it

    out = np.empty((len(images), side, side), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        # a copy: the arrays of IDX files are read-only, and torch warns of a tensor that shares one
        x = torch.tensor(images[start:start + chunk], dtype=torch.float32).unsqueeze(1)
        y = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", antialias=True,
                                            align_corners=False)
        out[start:start + chunk] = y.round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy()
    return out


def flatten(images: np.ndarray) -> np.ndarray:
    """``[N, h, w]`` to the chapter's ``[N, h*w]`` vectors."""
    return np.ascontiguousarray(images.reshape(len(images), -1))


def make_splits(train: Split, test: Split, val_size: int, seed: int, side: int | None = None) -> dict[str, Split]:
    """Flattened train / val / test, with a stratified, seeded validation set cut from training.

    With ``val_size == 0`` the chapter's setup is kept: all 60,000 images train
    and the validation split *is* the test set.
    """
    side = side or SIDE

    def prepare(images: np.ndarray) -> np.ndarray:
        return flatten(resize_images(images, side))

    train_x, test_x = prepare(train.images), prepare(test.images)
    if val_size == 0:
        splits = {"train": Split(train_x, train.labels), "val": Split(test_x, test.labels)}
    else:
        from sklearn.model_selection import train_test_split  # a second of imports the other stages skip

        tr_x, va_x, tr_y, va_y = train_test_split(
            train_x, train.labels, test_size=val_size, stratify=train.labels, random_state=seed
        )
        splits = {"train": Split(np.ascontiguousarray(tr_x), tr_y), "val": Split(np.ascontiguousarray(va_x), va_y)}
    splits["test"] = Split(test_x, test.labels)
    return splits


def validation_split_name(val_size: int) -> str:
    """What stands for the validation split in a sentence: with ``val_size == 0`` (:func:`make_splits`) the
    test split itself, which then fits the temperature and picks the best model too."""
    return "the validation split" if val_size else "the test split itself (data.val_size is 0: no validation split)"


def class_counts(labels: np.ndarray, n_classes: int = len(CLASS_NAMES)) -> list[int]:
    return np.bincount(labels, minlength=n_classes).astype(int).tolist()


def split_stats(splits: dict[str, Split], side: int) -> dict:
    """Sizes and per-class counts of each split, written next to the data."""
    return {
        "side": side,
        "n_features": side * side,
        "class_names": list(CLASS_NAMES),
        "splits": {
            name: {
                "size": len(split),
                "class_counts": dict(zip(CLASS_NAMES, class_counts(split.labels))),
                "mean_pixel": round(float(split.images.mean()) / 255, 6),
            }
            for name, split in splits.items()
        },
    }


def write_splits(directory: str | Path, splits: dict[str, Split], side: int) -> None:
    """``{split}_images.npy``, ``{split}_labels.npy`` and ``meta.json`` into an empty ``directory``
    (a stage's staged output, renamed into place with the others)."""
    directory = Path(directory)
    for name, split in splits.items():
        np.save(directory / f"{name}_images.npy", split.images, allow_pickle=False)
        np.save(directory / f"{name}_labels.npy", split.labels, allow_pickle=False)
    (directory / "meta.json").write_text(json.dumps({"side": side, "class_names": list(CLASS_NAMES)}, indent=2) + "\n")


def _load_array(path: Path) -> np.ndarray:
    """One ``.npy`` file; a truncated or foreign one is an error naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise ValueError(f"{path} is damaged ({one_line(exc)}); run the preprocess stage again") from None


def load_split(processed_dir: str | Path, name: str) -> Split:
    """One split written by :func:`write_splits`."""
    processed_dir = Path(processed_dir)
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
    images_path, labels_path = processed_dir / f"{name}_images.npy", processed_dir / f"{name}_labels.npy"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; preprocess the raw data first")
    images, labels = _load_array(images_path), _load_array(labels_path)
    if images.ndim != 2 or images.dtype != np.uint8 or labels.shape != (len(images),):
        raise ValueError(f"{processed_dir}: split {name!r} is malformed (images {images.shape} {images.dtype}, "
                         f"labels {labels.shape})")
    if labels.dtype.kind not in "iu" or (len(labels) and not 0 <= labels.min() <= labels.max() < len(CLASS_NAMES)):
        shown = f"{labels.min()}..{labels.max()}" if labels.dtype.kind in "iuf" and len(labels) else labels.dtype
        raise ValueError(f"{labels_path} is damaged (labels {shown}, expected integers 0..{len(CLASS_NAMES) - 1}); "
                         "run the preprocess stage again")
    return Split(images, labels)


def image_side(processed_dir: str | Path) -> int:
    """The side length the splits were written at, from ``meta.json`` (an error naming it if damaged)."""
    path = Path(processed_dir) / "meta.json"
    try:
        side = json.loads(path.read_text())["side"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; preprocess the raw data first") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is damaged ({type(exc).__name__}: {exc}); run the preprocess stage again") from None
    if not isinstance(side, int) or not 1 <= side <= 4096:
        raise ValueError(f"{path} is damaged (side {side!r}); run the preprocess stage again")
    return side


def split_files(processed_dir: str | Path) -> list[Path]:
    """The array files of the processed splits, in a fixed order (for a dataset checksum)."""
    processed_dir = Path(processed_dir)
    return [processed_dir / f"{name}_{part}.npy" for name in SPLITS for part in ("images", "labels")]


def input_example(images: np.ndarray, rows: int = 5) -> np.ndarray:
    """A split's first images as float32 pixels in [0, 1], one row each: the input example MLflow keeps
    with each logged model, and infers its signature from."""
    return np.ascontiguousarray(images[:rows], dtype=np.float32) / 255
