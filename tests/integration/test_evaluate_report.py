"""The evaluate and report stages after a real `dvc repro` on the real Fashion-MNIST, in a fresh clone."""

import base64
import csv
import hashlib
import io
import json
import re
import sys

import numpy as np
import pytest
import torch
from dvc_render.vega_templates import ConfusionTemplate
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

from softmax_regression import CLASS_NAMES
from support import run, set_param, stages_ran, stages_skipped

KINDS = ("scratch", "concise")
SCORED = (*KINDS, "baseline")
METRIC_KEYS = {"test_accuracy", "test_loss", "macro_f1", "val_accuracy", "test_ece", "test_mce", "test_brier",
               "temperature", "test_ece_calibrated"}
N_TEST = 10_000
UPSTREAM = {"fetch", "preprocess", "train_scratch", "train_concise", "train_baseline"}


@pytest.fixture(scope="module")
def project(pipeline_project):
    return pipeline_project[0]


def read_metrics(project):
    return json.loads((project / "reports/eval/metrics.json").read_text())


def read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every pixel: a truncated PNG fails here
        return image.size


def test_the_reliability_outs_hold_what_the_metrics_say_and_the_report_explains_them(project):
    """Recomputed from the test split and the models: the ECE and the temperature; the CSV's bins hold every
    test image; the report's calibration section has each diagram and one sentence per model."""
    from softmax_regression.evaluation.calibration import calibrate, read_reliability_csv
    from softmax_regression.models.file import load_model

    metrics = read_metrics(project)
    images, labels = (np.load(project / f"data/processed/test_{x}.npy") for x in ("images", "labels"))
    val_images, val_labels = (np.load(project / f"data/processed/val_{x}.npy") for x in ("images", "labels"))
    page = (project / "reports/report/report.html").read_text()
    assert "Calibration: are the probabilities honest?" in page
    for name in SCORED:
        model = load_model(project / f"models/{name}.pt")
        probabilities = [model.predict_proba(torch.from_numpy(x)).numpy() for x in (images, val_images)]
        c = calibrate(probabilities[0], labels, probabilities[1], val_labels, bins=15)
        assert metrics[name]["test_ece"] == pytest.approx(c.ece, abs=1e-6)
        assert metrics[name]["temperature"] == pytest.approx(c.temperature, rel=1e-5)
        before, after = read_reliability_csv((project / f"reports/eval/reliability/{name}.csv").read_text())
        assert before.counts.sum() == after.counts.sum() == N_TEST and len(before.counts) == 15
        assert before.ece() == pytest.approx(c.ece, abs=1e-5)
        assert png_size((project / f"reports/eval/reliability_png/{name}.png").read_bytes())[0] > 300
        assert re.search(rf"The {name} model is (over|under)-confident: its confidence is on average [\d.]+ points "
                         rf"(above|below) its accuracy \(ECE {c.ece:.4f}\); the temperature [\d.]+, fitted on the "
                         r"validation split, brings", page), name
        assert f'alt="{name} reliability diagram"' in page
    assert "Best model on the validation split: " in page and "test split itself" not in page


def test_with_the_test_split_as_validation_evaluate_warns_and_the_report_says_so(fast_build, tmp_path):
    """``data.val_size: 0``, the chapter's setup: the test split fits the temperatures and picks the champion.
    Evaluate says so, and the report names the test split wherever it would name the validation split. (The
    two stages run on their own, on the copy's data: the param alone decides the wording.)"""
    from conftest import fast_copy_of_build

    copy, _ = fast_copy_of_build(fast_build, tmp_path / "project")
    set_param(copy, "data.val_size", 0)
    evaluate = run([sys.executable, "-m", "pipeline", "evaluate"], copy)
    assert ("data.val_size is 0: the test split stands in for validation, so the temperature is fitted and the "
            "champion chosen on the test split") in evaluate.stderr
    run([sys.executable, "-m", "pipeline", "report"], copy)
    page = (copy / "reports/report/report.html").read_text()
    test_split = "the test split itself (data.val_size is 0: no validation split)"
    assert re.search(rf"Best model on {re.escape(test_split)}: \w+ \(test accuracy \(validating: data.val_size is 0\) "
                     r"0\.\d{4}\)\.", page)
    assert "<th>T (fitted on the test split)</th>" in page and "<th>validation accuracy</th>" not in page
    for name in SCORED:
        assert re.search(rf"The {name} model is (over|under)-confident: [^;<]+; the temperature [\d.]+, fitted on {re.escape(test_split)}, "
                         "brings the test ECE", page), name
    assert "validation split," not in page


def test_metrics_json_scores_both_models_and_the_baseline(project):
    metrics = read_metrics(project)
    assert set(metrics) == set(SCORED)
    for name, values in metrics.items():
        assert set(values) == METRIC_KEYS, name
        assert all(isinstance(v, float) for v in values.values()), name
        assert 0.80 < values["test_accuracy"] < 0.90, (name, values)
        assert 0.30 < values["test_loss"] < 0.60, (name, values)
        assert 0.78 < values["macro_f1"] <= values["test_accuracy"] + 0.02, (name, values)
        assert 0.80 < values["val_accuracy"] < 0.90, (name, values)
        # softmax regression is nearly calibrated; one temperature fitted on validation does not make it worse
        assert 0.0 < values["test_ece"] < 0.05 and values["test_ece"] <= values["test_mce"] < 0.5, (name, values)
        assert 0.15 < values["test_brier"] < 0.35 and 0.5 < values["temperature"] < 2.0, (name, values)
        assert values["test_ece_calibrated"] < values["test_ece"] + 0.002, (name, values)
    # a linear model solved by L-BFGS does at least as well as 10 epochs of SGD
    assert metrics["baseline"]["test_accuracy"] >= max(metrics[k]["test_accuracy"] for k in KINDS) - 0.005


def raw_logits(checkpoint: dict, images_uint8: np.ndarray) -> torch.Tensor:
    """The chapter's ``X W + b`` straight from a model file's tensors, in float64, with none of the project's
    code (no load_model, predict_proba, features or Standardization): ``X`` is the uint8 pixels, flattened,
    over 255, then standardized by the statistics the file records, if it records any."""
    W, b = checkpoint["state"]["W"], checkpoint["state"]["b"]  # every kind: W is features x classes
    side = checkpoint["input_shape"][-1]
    assert W.shape == (side * side, len(CLASS_NAMES)) and b.shape == (len(CLASS_NAMES),)
    X = torch.from_numpy(images_uint8.reshape(len(images_uint8), -1).astype(np.float64)) / 255
    assert X.shape[1] == side * side
    standardize = checkpoint["preprocessing"].get("standardize")
    if standardize is not None:
        X = (X - standardize["mean"].double()) / standardize["std"].double()
    return X @ W.double() + b.double()


def logged_metrics(project, model_file) -> dict[str, float]:
    """The metrics on the MLflow run of ``model_file`` in the project's own store, found as the stages find
    it: by the file's SHA-256 (tag model_sha256)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project.resolve() / 'mlflow.db'}")
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    (found,) = client.search_runs(experiment_ids, filter_string=f"tags.model_sha256 = '{digest}'")
    return found.data.metrics


@pytest.mark.parametrize("kind", SCORED)
def test_metrics_match_an_independent_scoring_of_the_model_file(project, kind):
    model_file = project / f"models/{kind}.pt"
    checkpoint = torch.load(model_file, map_location="cpu", weights_only=True)
    assert checkpoint["kind"] == kind
    images = np.load(project / "data/processed/test_images.npy")
    labels = np.load(project / "data/processed/test_labels.npy")
    assert images.dtype == np.uint8 and len(labels) == N_TEST
    logits = raw_logits(checkpoint, images)
    predicted = logits.argmax(dim=1).numpy()
    accuracy = float((predicted == labels).mean())
    loss = float(-torch.log_softmax(logits, dim=1)[torch.arange(N_TEST), torch.from_numpy(labels).long()].mean())
    val_images = np.load(project / "data/processed/val_images.npy")
    val_labels = np.load(project / "data/processed/val_labels.npy")
    assert val_images.dtype == np.uint8
    val_accuracy = float((raw_logits(checkpoint, val_images).argmax(dim=1).numpy() == val_labels).mean())
    # what evaluate wrote (metrics.json, DVC's metrics) ...
    scored = read_metrics(project)[kind]
    assert scored["test_accuracy"] == round(accuracy, 6)
    assert scored["test_loss"] == pytest.approx(loss, abs=1e-4)  # float32 in evaluate, float64 here
    assert scored["val_accuracy"] == round(val_accuracy, 6)
    # ... and what it logged into the model's MLflow run
    logged = logged_metrics(project, model_file)
    assert logged["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert logged["test_loss"] == pytest.approx(loss, abs=1e-4)
    assert logged["val_accuracy"] == pytest.approx(val_accuracy, abs=1e-6)
    # the confusion table DVC plots is exactly this model's predictions
    rows = read_csv(project / f"reports/eval/confusion/{kind}.csv")
    assert [(r["actual"], r["predicted"]) for r in rows] == [
        (CLASS_NAMES[a], CLASS_NAMES[p]) for a, p in zip(labels, predicted)
    ]


@pytest.mark.parametrize("name", SCORED)
def test_per_class_scores_agree_with_the_confusion_table(project, name):
    confusion_rows = read_csv(project / f"reports/eval/confusion/{name}.csv")
    assert len(confusion_rows) == N_TEST
    actual = [r["actual"] for r in confusion_rows]
    predicted = [r["predicted"] for r in confusion_rows]
    assert set(actual) == set(predicted) == set(CLASS_NAMES)
    metrics = read_metrics(project)[name]
    assert sum(a == p for a, p in zip(actual, predicted)) / N_TEST == pytest.approx(metrics["test_accuracy"],
                                                                                   abs=1e-6)
    precision, recall, f1, support = precision_recall_fscore_support(actual, predicted, labels=list(CLASS_NAMES),
                                                                     zero_division=0)
    rows = [r for r in read_csv(project / "reports/eval/per_class.csv") if r["model"] == name]
    assert [r["class"] for r in rows] == list(CLASS_NAMES)
    for c, r in enumerate(rows):
        assert float(r["precision"]) == pytest.approx(precision[c], abs=1e-6), r
        assert float(r["recall"]) == pytest.approx(recall[c], abs=1e-6), r
        assert float(r["f1"]) == pytest.approx(f1[c], abs=1e-6), r
        assert int(r["support"]) == support[c] == 1000
    assert metrics["macro_f1"] == pytest.approx(f1.mean(), abs=1e-6)


def test_per_class_csv_holds_every_model_and_class(project):
    rows = read_csv(project / "reports/eval/per_class.csv")
    assert list(rows[0]) == ["model", "class", "precision", "recall", "f1", "support"]
    assert [(r["model"], r["class"]) for r in rows] == [(m, c) for m in SCORED for c in CLASS_NAMES]


def test_dvc_metrics_show_prints_every_models_test_accuracy(project):
    metrics = read_metrics(project)
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    assert shown[""]["data"]["reports/eval/metrics.json"]["data"] == metrics

    table = run(["dvc", "metrics", "show"], project).stdout.splitlines()
    header = table[0].split()
    (row,) = [line.split() for line in table[1:] if line.startswith("reports/eval/metrics.json")]
    assert header[0] == "Path" and len(row) == len(header)
    printed = dict(zip(header[1:], row[1:]))
    for name in SCORED:
        value = printed[f"{name}.test_accuracy"]
        assert re.fullmatch(r"0\.\d+", value), value
        assert float(value) == pytest.approx(metrics[name]["test_accuracy"], abs=1e-5)
    assert float(printed["baseline.macro_f1"]) == pytest.approx(metrics["baseline"]["macro_f1"], abs=1e-5)


def test_confusion_matrices_are_dvc_plots_drawn_with_the_confusion_template(project):
    metrics = read_metrics(project)
    plots = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    template = ConfusionTemplate.DEFAULT_CONTENT
    for name in SCORED:
        (plot,) = plots[f"reports/eval/confusion/{name}.csv"]
        assert plot["type"] == "vega"
        spec = plot["content"]
        assert spec["title"]["text"] == "Confusion matrix on the test set"
        assert spec["params"] == template["params"]
        inner = spec["spec"]
        # the confusion template: count (actual, predicted) pairs and draw them as rectangles
        assert inner["transform"][0] == {"aggregate": [{"op": "count", "as": "xy_count"}],
                                         "groupby": ["predicted", "actual"]}
        assert inner["layer"][0]["mark"] == "rect"
        assert inner["layer"][-1] == template["spec"]["layer"][-1]
        assert inner["encoding"]["x"] == {"field": "actual", "type": "nominal", "sort": "ascending",
                                          "title": "true class"}
        assert inner["encoding"]["y"] == {"field": "predicted", "type": "nominal", "sort": "ascending",
                                          "title": "predicted class"}
        values = spec["data"]["values"]
        assert len(values) == N_TEST
        right = sum(v["actual"] == v["predicted"] for v in values)
        assert right / N_TEST == pytest.approx(metrics[name]["test_accuracy"], abs=1e-6)


def test_dvc_plots_show_renders_the_confusion_plots(project, tmp_path):
    out = tmp_path / "plots"
    run(["dvc", "plots", "show", "-o", str(out)], project)
    page = (out / "index.html").read_text()
    specs = {target: json.loads(spec) for spec, target in
             re.findall(r"var spec = (\{.*?\});\s*vegaEmbed\('#([^']*)'", page, re.S)}
    for name in SCORED:
        spec = specs[f"reports_eval_confusion_{name}_csv"]
        assert spec["title"]["text"] == "Confusion matrix on the test set"
        assert spec["spec"]["transform"][0]["aggregate"] == [{"op": "count", "as": "xy_count"}]
        assert len(spec["data"]["values"]) == N_TEST


def test_confusion_heatmaps_are_pngs(project):
    pngs = sorted(p.name for p in (project / "reports/eval/confusion_png").iterdir())
    assert pngs == sorted(f"{name}.png" for name in SCORED)
    for name in SCORED:
        width, height = png_size((project / f"reports/eval/confusion_png/{name}.png").read_bytes())
        assert width > 400 and height > 400


def test_report_html_is_self_contained_with_embedded_images(project):
    page = (project / "reports/report/report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    sources = re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', page)
    assert len(sources) == page.count("<img") >= 8
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        width, height = png_size(base64.b64decode(src.split(",", 1)[1], validate=True))
        assert width > 100 and height > 100
    assert not re.search(r"""(?:src|href)=["']?(?:https?:|//|file:)""", page)
    assert "<script" not in page and "<link" not in page
    metrics = read_metrics(project)
    for name in SCORED:
        shown = re.search(rf'data-model="{name}" data-metric="test_accuracy">([^<]*)<', page).group(1)
        assert shown == f"{metrics[name]['test_accuracy']:.4f}"


def test_summary_md_lists_the_metrics_and_links_existing_figures(project):
    report = project / "reports/report"
    summary = (report / "summary.md").read_text()
    metrics = read_metrics(project)
    lines = summary.splitlines()
    assert lines[0] == "# Softmax regression on Fashion-MNIST"
    for name in SCORED:
        (row,) = [line for line in lines if line.startswith(f"| {name} |")]
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:4] == [f"{metrics[name][k]:.4f}" for k in ("test_accuracy", "test_loss", "macro_f1")]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", summary)
    assert len(links) >= 5
    for link in links:
        png_size((report / link).read_bytes())


def test_without_the_baseline_only_the_two_models_are_scored(project):
    before = read_metrics(project)
    set_param(project, "evaluate.baseline", False)
    try:
        result = run(["dvc", "repro"], project)
        assert stages_ran(result.stdout) == ["evaluate", "report"]
        assert UPSTREAM <= set(stages_skipped(result.stdout))
        metrics = read_metrics(project)
        assert set(metrics) == set(KINDS)
        assert {k: metrics[k] for k in KINDS} == {k: before[k] for k in KINDS}
        assert sorted(p.name for p in (project / "reports/eval/confusion").iterdir()) == ["concise.csv",
                                                                                         "scratch.csv"]
        assert sorted(p.name for p in (project / "reports/eval/confusion_png").iterdir()) == ["concise.png",
                                                                                             "scratch.png"]
        assert {r["model"] for r in read_csv(project / "reports/eval/per_class.csv")} == set(KINDS)
        shown = run(["dvc", "metrics", "show"], project).stdout
        assert "baseline" not in shown and "scratch.test_accuracy" in shown
        page = (project / "reports/report/report.html").read_text()
        assert 'data-model="baseline"' not in page and 'data-model="scratch"' in page
        assert sorted(p.name for p in (project / "reports/eval/reliability_png").iterdir()) == ["concise.png",
                                                                                               "scratch.png"]
        assert page.count("<img") == 10  # one confusion matrix and one reliability diagram fewer
        assert "The baseline model is" not in page
    finally:
        run(["git", "checkout", "params.yaml"], project)
        run(["dvc", "repro"], project)
    assert read_metrics(project) == before


def test_changing_report_params_reruns_only_the_report(project):
    report = project / "reports/report"
    metrics_before = (project / "reports/eval/metrics.json").read_bytes()
    predictions_before = png_size((report / "figures/predictions.png").read_bytes())
    mistakes_before = png_size((report / "figures/mistakes.png").read_bytes())
    set_param(project, "report.n_images", 9)
    set_param(project, "report.n_mistakes", 4)
    try:
        result = run(["dvc", "repro"], project)
        assert stages_ran(result.stdout) == ["report"]
        assert set(stages_skipped(result.stdout)) == UPSTREAM | {"evaluate"}
        assert (project / "reports/eval/metrics.json").read_bytes() == metrics_before
        # 9 images fit one row of the grid instead of two; 4 mistakes a row of 4 instead of 9
        predictions = png_size((report / "figures/predictions.png").read_bytes())
        mistakes = png_size((report / "figures/mistakes.png").read_bytes())
        assert predictions[1] < predictions_before[1]
        assert mistakes[0] < mistakes_before[0]
    finally:
        run(["git", "checkout", "params.yaml"], project)
        run(["dvc", "repro"], project)
    assert png_size((report / "figures/predictions.png").read_bytes()) == predictions_before
