"""`fmnist-predict`: the top classes of Fashion-MNIST-like images, from a trained model."""

from __future__ import annotations

import json
import sys

import click
import numpy as np
import torch

from softmax_regression.errors import mlflow_error_line, one_line
from softmax_regression.evaluation import TEMPERATURE_RANGE
from softmax_regression.filetypes import not_a_regular_file
from softmax_regression.models.file import ModelFileError, load_model
from softmax_regression.predicting.inputs import MAX_IMAGES, InputImageError, load_inputs, top_k


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--top", "k", default=3, show_default=True, type=click.IntRange(1, 10), help="Classes to list per image.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option("--invert", is_flag=True, help="Invert grey levels (dark object on a light background, as in photos).")
@click.option("--calibrated", is_flag=True,
              help="Calibrated probabilities: the temperature evaluate fitted on the validation split, from the "
                   "registered version (models:/ URIs; tag 'temperature').")
@click.option("--temperature", type=click.FloatRange(*TEMPERATURE_RANGE), default=None,
              help="Divide the logits by this temperature (a model file's is in reports/eval/metrics.json).")
@click.option("-v", "--verbose", is_flag=True, help="Show a traceback with an unexpected error.")
def main(model: str, images: tuple[str, ...], k: int, as_json: bool, invert: bool, calibrated: bool,
         temperature: float | None, verbose: bool) -> None:
    """Classify IMAGES (PNG / JPEG of any size, or IDX files) with MODEL: a models/*.pt file or an
    MLflow model URI such as models:/fashion-mnist-softmax@champion (tracking server from
    MLFLOW_TRACKING_URI, else ./mlflow.db).

    Example: fmnist-predict models/concise.pt shoe.png data/raw/t10k-images-idx3-ubyte

    Trust: no code runs from what is loaded. A .pt file is read with torch's
    weights-only loader; a models:/ or runs:/ URI is read the same way, from the
    model file inside its logged classifier (MLflow's pyfunc wrapper is not
    loaded).
    """
    from softmax_regression.tracking.store import TrackingUnavailable

    try:
        click.echo(answer(model, images, k, as_json, invert, calibrated, temperature))
    except (ModelFileError, InputImageError, TrackingUnavailable) as exc:
        click.echo(f"fmnist-predict: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # as a stage says it; click would print "Aborted!" and exit 1
        click.echo("fmnist-predict: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # anything else is still one line; the traceback with -v
        if verbose:
            raise
        click.echo(f"fmnist-predict: error: {mlflow_error_line(exc) or f'{type(exc).__name__}: {one_line(exc)}'}",
                   err=True)
        sys.exit(1)


def answer(model: str, images: tuple[str, ...], k: int, as_json: bool, invert: bool, calibrated: bool,
           temperature: float | None) -> str:
    """What ``fmnist-predict`` prints for these arguments."""
    if calibrated and temperature is not None:
        raise InputImageError("--calibrated and --temperature exclude each other: --calibrated reads the "
                              "temperature of the registered version, --temperature gives one")
    if calibrated and not model.startswith("models:/"):
        raise InputImageError("--calibrated reads the temperature of a registered version (models:/...); "
                              "for a model file or a runs:/ URI give --temperature (evaluate's is in "
                              "reports/eval/metrics.json)")
    if ":/" in model:  # an MLflow model URI; mlflow is imported only for these (seconds of start-up)
        from softmax_regression.tracking.registry import calibrated_version, load_model_uri

        if calibrated:
            model, temperature = calibrated_version(model)
        loaded = load_model_uri(model)
    elif (kind := not_a_regular_file(model)) is not None:  # load_model would say "not found"
        raise ModelFileError(f"model file {model} is {kind}, not a regular file")
    else:
        loaded = load_model(model)
    inputs = []
    for path in images:
        inputs.extend(load_inputs(path, loaded.side, invert=invert))
        if len(inputs) > MAX_IMAGES:
            raise InputImageError(f"more than {MAX_IMAGES} images in one call (at {path}); split the inputs")
    pixels = torch.from_numpy(np.stack([item.pixels for item in inputs]))
    probabilities = loaded.predict_proba(pixels).numpy()
    if temperature is not None:
        from softmax_regression.evaluation import with_temperature

        probabilities = with_temperature(probabilities, temperature)
    ranked = top_k(probabilities, loaded.class_names, k)
    if as_json:
        return json.dumps([{"input": item.name, "top": [{"class": c, "probability": round(p, 6)} for c, p in top]}
                           for item, top in zip(inputs, ranked)], indent=2)
    return "\n".join(f"{item.name}: " + ", ".join(f"{c} {p:.3f}" for c, p in top) for item, top in zip(inputs, ranked))

if __name__ == "__main__":
    main()
