"""Classifying images a user brings: PNG / JPEG files of any size, or IDX files of many images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .idx import IdxError, decompress_if_gzip, parse_idx


class InputImageError(ValueError):
    """An input file is not an image or IDX file we can classify."""


@dataclass
class InputImage:
    name: str
    pixels: np.ndarray
    """uint8 ``[side*side]``, white object on black as in Fashion-MNIST."""


def is_idx(data: bytes) -> bool:
    return data[:3] == b"\x00\x00\x08"


def load_inputs(path: str | Path, side: int, invert: bool = False) -> list[InputImage]:
    """One InputImage per image in ``path``: a picture file, or every image of an IDX (.gz) file.

    Pictures are converted to grey and resized to ``side x side``; ``invert``
    turns a dark object on a light background (a photo) into Fashion-MNIST's
    light object on black.
    """
    path = Path(path)
    try:
        data = decompress_if_gzip(path.read_bytes(), str(path))
    except FileNotFoundError:
        raise InputImageError(f"{path}: no such file") from None
    except IdxError as exc:
        raise InputImageError(str(exc)) from None
    if is_idx(data):
        try:
            images = parse_idx(data, str(path))
        except IdxError as exc:
            raise InputImageError(str(exc)) from None
        if images.ndim != 3:
            kind = "a label file" if images.ndim == 1 else f"{images.ndim}-dimensional"
            raise InputImageError(f"{path}: IDX file is {kind}, not images (N x height x width)")
        if len(images) == 0:
            raise InputImageError(f"{path}: IDX file holds no images")
        images = np.stack([resize_grey(Image.fromarray(im), side) for im in images]) \
            if images.shape[1:] != (side, side) else images
        return [InputImage(f"{path}[{i}]", _prepare(im, invert)) for i, im in enumerate(images)]
    try:
        with Image.open(path) as picture:
            picture.load()
            grey = resize_grey(picture, side)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputImageError(f"{path}: not a readable image or IDX file ({type(exc).__name__})") from None
    return [InputImage(str(path), _prepare(grey, invert))]


def resize_grey(picture: Image.Image, side: int) -> np.ndarray:
    grey = picture.convert("L")
    if grey.size != (side, side):
        grey = grey.resize((side, side), Image.Resampling.LANCZOS)
    return np.asarray(grey, dtype=np.uint8)


def _prepare(image: np.ndarray, invert: bool) -> np.ndarray:
    pixels = image.reshape(-1)
    return (255 - pixels) if invert else pixels


def top_k(probabilities: np.ndarray, class_names: list[str], k: int) -> list[list[tuple[str, float]]]:
    """For each row, the ``k`` most probable classes with their probabilities, most probable first."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[(class_names[c], float(row[c])) for c in idx] for row, idx in zip(probabilities, order)]
