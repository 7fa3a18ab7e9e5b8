"""Fuzzing the readers of untrusted input: random bytes and random YAML end in the clean error, never a
traceback, and take bounded memory (every size is checked before anything is allocated for it)."""

from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from samples import encode_idx, project_params
from softmax_regression.data.idx import IdxError, decompress_if_gzip, parse_idx
from softmax_regression.params import SCHEMA, ParamsError, load_params, validate_params
from softmax_regression.predicting.inputs import InputImageError, load_inputs

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

idx_headers = st.builds(
    lambda ndim, dims, dtype, tail: b"\x00\x00" + bytes([dtype, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
    + tail,
    st.integers(0, 4), st.lists(st.integers(0, 2**32 - 1), max_size=4), st.sampled_from([0x08, 0x09, 0x0D]),
    st.binary(max_size=512),
)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), idx_headers))
def test_idx_reader_takes_any_bytes(data):
    try:
        array = parse_idx(data, "fuzz")
    except IdxError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    assert array.dtype == np.uint8 and array.nbytes <= len(data)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), idx_headers.map(gzip.compress)), st.integers(0, 4096))
def test_gzip_layer_takes_any_bytes_within_its_cap(data, cap):
    try:
        content = decompress_if_gzip(data, "fuzz", max_size=cap)
    except IdxError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    assert len(content) <= cap


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**80, 2**80), st.floats(allow_nan=True),
                         st.text(max_size=20))
yaml_values = st.recursive(yaml_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)), max_leaves=20)
sections = st.sampled_from(["data", "train", "baseline", "evaluate", "report", "tracking", "other"])
keys = st.sampled_from(["resize", "seed", "val_size", "epochs", "lr", "batch_size", "C", "max_iter", "baseline",
                        "n_images", "experiment", "mirrors", "timeout", "deadline", "device", "loss", "schedule",
                        "normalize", "unknown"])
params_like = st.dictionaries(sections, st.one_of(yaml_values, st.dictionaries(keys, yaml_values, max_size=5)),
                              max_size=4)


def over_the_projects(changes: dict) -> dict:
    """The project's params with ``changes`` on top: a generated mapping's keys set over its section's (so the
    values reach their rules, every other key being present), anything else replacing the section."""
    raw = project_params()
    for section, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            raw[section].update(value)
        else:
            raw[section] = value
    return raw


@FUZZ
@given(st.one_of(params_like, yaml_values, params_like.map(over_the_projects)))
def test_params_validator_takes_any_structure(raw):
    try:
        params = validate_params(raw)
    except ParamsError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert set(params) == set(SCHEMA)
    assert all(set(params[section]) == set(rules) for section, rules in SCHEMA.items())


@FUZZ
@given(st.one_of(st.text(max_size=400), st.one_of(params_like, params_like.map(over_the_projects)).map(
    lambda p: yaml.safe_dump(p, allow_unicode=True))))
def test_params_file_takes_any_text(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(text)
        try:
            load_params(path)
        except ParamsError as exc:
            assert str(exc) and "\n" not in str(exc)


def picture_bytes(mode: str, size: tuple[int, int], seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((size[1], size[0]), dtype=np.float32))
    else:
        image = base.convert(mode)
    for candidate in (fmt, "PNG", "TIFF"):  # a mode the format cannot hold goes to one that can
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=candidate)
            return buffer.getvalue()
        except (OSError, KeyError, ValueError):
            continue
    raise AssertionError(f"no format holds mode {mode}")


pictures = st.builds(
    picture_bytes,
    st.sampled_from(["L", "P", "RGB", "RGBA", "LA", "1", "I;16", "I", "F"]),
    st.tuples(st.integers(1, 64), st.integers(1, 64)), st.integers(0, 1000),
    st.sampled_from(["PNG", "TIFF", "BMP"]),
).filter(bool)


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    mutable = bytearray(data)
    for position, value in flips:
        if mutable:
            mutable[position % len(mutable)] = value
    return bytes(mutable[:cut] if cut is not None else mutable)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.one_of(
    st.binary(max_size=2048),
    idx_headers,
    st.builds(lambda a: encode_idx(a), st.integers(1, 3).flatmap(
        lambda n: st.just(np.zeros((n, 5, 7), dtype=np.uint8)))),
    st.builds(mutate, pictures, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
              st.one_of(st.none(), st.integers(0, 4096))),
))
def test_prediction_input_loading_takes_any_file(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(data)
        try:
            inputs = load_inputs(path, 28)
        except InputImageError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
            return
    assert inputs and all(item.pixels.dtype == np.uint8 and item.pixels.shape == (784,) for item in inputs)


LEVELS = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
"""Every grey level 0..255, in a pattern that is not symmetric: what each picture mode below is made to hold."""


def picture_of_levels(mode: str) -> tuple[Image.Image, np.ndarray]:
    """A 28x28 picture of ``mode`` made from :data:`LEVELS`, and the grey levels it must load as: the levels
    themselves, except where the mode cannot hold them (``1``: 0 or 255)."""
    g = LEVELS
    grey = Image.fromarray(g)
    opaque = Image.fromarray(np.full_like(g, 255))
    if mode == "P":  # a reversed grey palette: an index read as a level would load the negative
        picture = Image.fromarray(255 - g).convert("P")
        picture.putpalette([255 - i for i in range(256) for _ in range(3)])
        return picture, g
    pictures = {
        "L": lambda: grey,
        "RGB": lambda: Image.merge("RGB", (grey, grey, grey)),
        "RGBA": lambda: Image.merge("RGBA", (grey, grey, grey, opaque)),
        "LA": lambda: Image.merge("LA", (grey, opaque)),
        "1": lambda: Image.fromarray(g > 127),
        "I;16": lambda: Image.fromarray(g.astype(np.uint16) * 257),  # 16-bit grey: 65535 is white
        "I": lambda: Image.fromarray(g.astype(np.int32)),  # 32-bit levels within 0..255: taken as they are
        # over 255: 16-bit levels; + 128 so that a level cast to 8 bits unscaled (mod 256) is not g by chance
        "I;16 as I": lambda: Image.fromarray(np.minimum(g.astype(np.int32) * 257 + 128, 65535)),
        "F": lambda: Image.fromarray(g.astype(np.float32) / 255),  # floats: the project's pixels in [0, 1]
    }
    expected = np.where(g > 127, 255, 0).astype(np.uint8) if mode == "1" else g
    return pictures[mode](), expected


@pytest.mark.parametrize("mode", ["L", "P", "RGB", "RGBA", "LA", "1", "I;16", "I", "I;16 as I", "F"])
def test_every_picture_mode_loads_as_grey(tmp_path, mode):
    """A picture of each mode Pillow reads, saved as PNG (as TIFF where PNG cannot hold the mode), loads as the
    grey levels it holds, pixel for pixel: a palette through its palette, colour and grey with opaque alpha as
    their grey, 16-bit grey scaled (65535 -> 255), 32-bit integer levels as they are where they fit in 0..255
    and as 16-bit ones where they do not, floats in [0, 1] times 255, black and white as 0 and 255."""
    picture, expected = picture_of_levels(mode)
    path = tmp_path / "picture"
    picture.save(path, format="TIFF" if picture.mode in ("I", "F") else "PNG")
    with Image.open(path) as reread:
        assert reread.mode == picture.mode  # the file holds the mode the branch under test reads
    [item] = load_inputs(path, 28)
    assert item.pixels.dtype == np.uint8
    np.testing.assert_array_equal(item.pixels, expected.ravel())


def test_negative_32_bit_levels_are_black_not_wrapped_round(tmp_path):
    """A signed 32-bit picture may hold levels below 0: black, as a level above 255 is white, not -10 mod 256."""
    levels = np.full((28, 28), -10, dtype=np.int32)
    levels[:, 14:] = 200
    path = tmp_path / "signed.tiff"
    Image.fromarray(levels).save(path)
    [item] = load_inputs(path, 28)
    np.testing.assert_array_equal(item.pixels, np.clip(levels, 0, 255).astype(np.uint8).ravel())


@pytest.mark.parametrize("orientation, bright", [(1, "left"), (6, "top"), (8, "bottom"), (3, "right")])
def test_a_picture_loads_the_way_up_its_exif_orientation_says(tmp_path, orientation, bright):
    """A phone stores a photo as the sensor saw it and the way up in EXIF's Orientation, which viewers follow:
    a bar down the stored picture's left edge is at the top of one taken turned a quarter (6), at the bottom
    of one turned the other way (8)."""
    stored = np.zeros((28, 28), dtype=np.uint8)
    stored[:, :4] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    path = tmp_path / "photo.png"
    Image.fromarray(stored).save(path, exif=exif)
    [item] = load_inputs(path, 28)
    edges = {"left": (slice(None), slice(0, 4)), "right": (slice(None), slice(24, 28)),
             "top": (slice(0, 4), slice(None)), "bottom": (slice(24, 28), slice(None))}
    loaded = item.pixels.reshape(28, 28)
    assert {edge: int(loaded[where].min()) for edge, where in edges.items()}[bright] == 255
    assert int(loaded.sum()) == 255 * 4 * 28  # the bar alone, nowhere else


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
@pytest.mark.parametrize("invert", [False, True])
def test_transparent_pixels_are_background_whatever_colour_they_hold(tmp_path, mode, invert):
    """A cut-out (a product photo on a transparent background): the transparent pixels, stored white here, load
    as Fashion-MNIST's black background, with or without --invert; the garment, opaque grey 40, as 40, or
    215 once inverted."""
    garment = np.zeros((28, 28), dtype=bool)
    garment[6:22, 8:20] = True
    grey = np.where(garment, 40, 255).astype(np.uint8)  # the hidden pixels hold white
    alpha = np.where(garment, 255, 0).astype(np.uint8)
    if mode == "P":  # a palette picture whose white entry is transparent
        picture = Image.fromarray(grey).convert("P")
        picture.info["transparency"] = 255
    else:
        picture = Image.merge(mode, [Image.fromarray(grey)] * (len(mode) - 1) + [Image.fromarray(alpha)])
    path = tmp_path / "cut-out.png"
    picture.save(path, transparency=255) if mode == "P" else picture.save(path)
    [item] = load_inputs(path, 28, invert=invert)
    expected = np.where(garment, 215 if invert else 40, 0).astype(np.uint8)
    np.testing.assert_array_equal(item.pixels, expected.ravel())
