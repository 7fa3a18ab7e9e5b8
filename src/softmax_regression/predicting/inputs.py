"""Classifying images a user brings: PNG / JPEG files of any size, or IDX files of many images."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from softmax_regression.data.idx import IdxError, decompress_if_gzip, parse_idx
from softmax_regression.filetypes import not_a_regular_file


class InputImageError(ValueError):
    """An input file is not an image or IDX file we can classify, or is over a bound."""


MAX_PICTURE_PIXELS = 50_000_000
"""A picture larger than this (about 7000 x 7000) is refused before it is decoded."""
MAX_IDX_BYTES = 128 << 20
"""An IDX file (decompressed) larger than this is refused; Fashion-MNIST's largest is 47 MB."""
MAX_IMAGES = 100_000
"""At most this many images per call, over all inputs."""


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
    light object on black. A transparent pixel is background: black, or white
    before ``invert`` turns it black.
    """
    path = Path(path)
    kind = not_a_regular_file(path)
    if kind is not None:  # checked before opening: a named pipe without a writer would block forever
        raise InputImageError(f"{path}: is {kind}, not a regular file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise InputImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputImageError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if head[:2] == b"\x1f\x8b" or is_idx(head):
        return _load_idx(path, size, side, invert)
    return [InputImage(str(path), _prepare(_load_picture(path, side, background=255 if invert else 0), invert))]


def _load_idx(path: Path, size: int, side: int, invert: bool) -> list[InputImage]:
    if size > MAX_IDX_BYTES:
        raise InputImageError(f"{path}: {size} bytes, over the {MAX_IDX_BYTES} bytes an input may have")
    try:
        data = decompress_if_gzip(path.read_bytes(), str(path), max_size=MAX_IDX_BYTES)
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
        if len(images) > MAX_IMAGES:
            raise InputImageError(f"{path}: {len(images)} images, over the {MAX_IMAGES} allowed at once")
        if 0 in images.shape[1:]:  # nothing to see, and resizing such an image costs its other side's length
            raise InputImageError(f"{path}: images of {images.shape[1]}x{images.shape[2]} pixels hold no pixel")
        if images.shape[1] * images.shape[2] > MAX_PICTURE_PIXELS:
            raise InputImageError(f"{path}: images of {images.shape[1]}x{images.shape[2]} pixels, over the "
                                  f"{MAX_PICTURE_PIXELS} allowed")
        images = np.stack([resize_grey(Image.fromarray(im), side) for im in images]) \
            if images.shape[1:] != (side, side) else images
        return [InputImage(f"{path}[{i}]", _prepare(im, invert)) for i, im in enumerate(images)]
    raise InputImageError(f"{path}: gzip data that is not an IDX file")


def _load_picture(path: Path, side: int, background: int = 0) -> np.ndarray:
    """A picture file as ``side x side`` grey levels (transparent pixels as ``background``), its size checked
    before it is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns of damaged metadata; the error below is the one line
            with Image.open(path) as picture:
                width, height = picture.size
                if width * height > MAX_PICTURE_PIXELS:
                    raise InputImageError(f"{path}: {width}x{height} pixels, over the {MAX_PICTURE_PIXELS} allowed")
                picture.load()
                # a camera stores its picture as the sensor saw it, and the way up in EXIF: viewers turn it
                return resize_grey(ImageOps.exif_transpose(picture), side, background)
    except InputImageError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own cap, checked in open (over 179 M pixels)
        raise InputImageError(f"{path}: {str(exc).split(',')[0]}, over the {MAX_PICTURE_PIXELS} allowed") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputImageError(f"{path}: not a readable image or IDX file ({type(exc).__name__})") from None


def grey_levels(picture: Image.Image, background: int = 0) -> Image.Image:
    """The picture as 8-bit grey ("L"). 16-bit grey is scaled (65535 -> 255), not clipped as Pillow's
    ``convert("L")`` does; a palette picture goes through its palette; colour by luminance; a picture with
    transparency over the grey level ``background`` (``convert("L")`` would drop the alpha and keep whatever
    colour a transparent pixel holds)."""
    if picture.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        levels = np.asarray(picture).astype(np.float64)
        wide = picture.mode.startswith("I;16") or levels.max(initial=0) > 255
        scaled = np.rint(levels / 257.0) if wide else levels
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")  # a signed "I" may hold < 0
    if picture.mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(picture) * 255), 0, 255).astype(np.uint8), mode="L")
    if picture.mode in ("P", "PA"):
        picture = picture.convert("RGBA" if picture.mode == "PA" or "transparency" in picture.info else "RGB")
    if picture.mode in ("RGBA", "LA", "La", "RGBa"):
        behind = Image.new("RGBA", picture.size, (background, background, background, 255))
        picture = Image.alpha_composite(behind, picture.convert("RGBA"))
    return picture.convert("L")


def resize_grey(picture: Image.Image, side: int, background: int = 0) -> np.ndarray:
    grey = grey_levels(picture, background)
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
