"""The report page: one self-contained HTML page (images embedded) and a short Markdown summary."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

from softmax_regression.data.splits import validation_split_name

METRIC_LABELS = {"test_accuracy": "test accuracy", "test_loss": "test loss (cross-entropy)",
                 "macro_f1": "macro F1", "val_accuracy": "validation accuracy",
                 "train_loss": "train loss (last epoch)", "test_ece": "test ECE",
                 "test_ece_calibrated": "test ECE at temperature T", "temperature": "T (fitted on validation)",
                 "test_brier": "test Brier score"}


def metric_labels(validation: str) -> dict[str, str]:
    """The metrics tables' column labels; ``validation`` names the split that validated
    (``validation_split_name``): with none split off, the two columns measured on the test split say so."""
    if validation != validation_split_name(0):
        return METRIC_LABELS
    return {**METRIC_LABELS, "val_accuracy": "test accuracy (validating: data.val_size is 0)",
            "temperature": "T (fitted on the test split)"}

CALIBRATION_INTRO = (
    "The chapter's case for softmax: outputs that are probabilities, so the model says how sure it is. "
    "Calibrated, a predicted 0.9 is right 90% of the time. Each diagram bins the test images by the "
    "probability of the predicted class (the count of images at the foot of each bar) and plots the accuracy in the "
    "bin against the diagonal; the hatched part is the gap to the bin's mean confidence, the points the "
    "accuracy after temperature scaling.")


@dataclass
class Section:
    title: str
    text: str = ""
    images: list[tuple[str, bytes]] = field(default_factory=list)
    """(alt text, PNG bytes) pairs, embedded as data URIs."""
    table_html: str = ""


CHAPTER_BAR = {"train loss": ("<", 0.5), "train accuracy": (">", 0.7), "test accuracy": (">", 0.7)}
"""The chapter's check of its own run: train loss under 0.5, train and test accuracy over 0.7."""


def chapter_bar(name: str, values: dict[str, float]) -> str:
    """One sentence: ``name``'s train loss, train accuracy and test accuracy against the chapter's bar,
    each marked, then met or not met."""
    parts, met = [], True
    for key, (op, limit) in CHAPTER_BAR.items():
        ok = values[key] < limit if op == "<" else values[key] > limit
        met &= ok
        parts.append(f"{key} {values[key]:.4f} {op} {limit} {'(yes)' if ok else '(NO)'}")
    return f"{name}: " + ", ".join(parts) + f": the chapter's bar is {'met' if met else 'NOT met'}."


WORKED_INTRO = (
    "Regression predicts a number (a price, a temperature) and is scored by how far off it is; "
    "classification predicts which of a few categories an input belongs to, and softmax regression does so "
    "by turning one linear score per class into probabilities. Below, the chapter's own worked examples, "
    "computed by this project's code on this run."
)


def _matrix_html(rows: list[list], header: list[str] | None = None, row_names: list[str] | None = None,
                 fmt: str = "{:.4f}") -> str:
    def cell(v):
        return html.escape(fmt.format(v) if isinstance(v, float) else str(v))

    out = ['<table class="worked">']
    if header:
        out.append("<tr>" + ("<th></th>" if row_names else "") +
                   "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for i, row in enumerate(rows):
        name = f"<th>{html.escape(row_names[i])}</th>" if row_names else ""
        out.append("<tr>" + name + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def worked_html(worked: dict) -> str:
    """The chapter's worked examples (``softmax_regression.evaluation.worked``, as evaluate wrote them) as HTML."""
    hot, soft, ce, grad = worked["one_hot"], worked["softmax"], worked["cross_entropy"], worked["gradient"]
    sums = ", ".join(f"{v:.6f}" for v in soft["row_sums"])
    picked = ", ".join(f"{v:g}" for v in ce["picked"])
    losses = ", ".join(f"{v:.4f}" for v in ce["losses"])
    parts = [
        "<h3>One-hot labels</h3>",
        f"<p>The first {len(hot['labels'])} test labels, each a vector with a single 1 at its class.</p>",
        _matrix_html(hot["encoded"], [str(c) for c in range(len(hot["encoded"][0]))],
                     [f"{label} ({name})" for label, name in zip(hot["labels"], hot["names"])], fmt="{}"),
        "<h3>Softmax on a small example</h3>",
        "<p>The chapter's <code>X = torch.normal(0, 1, (2, 5))</code> (seeded), then "
        "<code>softmax(X)</code> by the scratch model: every entry is positive "
        f"({'yes' if soft['all_positive'] else 'NO'}), and the rows sum to {sums}.</p>",
        _matrix_html(soft["X"], [f"x{j}" for j in range(len(soft["X"][0]))], ["X row 0", "X row 1"]),
        _matrix_html(soft["softmax"], [f"p{j}" for j in range(len(soft["softmax"][0]))],
                     ["softmax row 0", "softmax row 1"]),
        "<h3>Cross-entropy by indexing</h3>",
        f"<p><code>y_hat = {ce['y_hat']}</code>, <code>y = {ce['y']}</code>: "
        f"<code>y_hat[[0, 1], y]</code> picks each row's probability of its true class, <b>{picked}</b>; "
        f"the cross-entropy of each row is minus its log, {losses}.</p>",
        "<h3>The gradient is softmax minus one-hot</h3>",
        f"<p>On a real batch of {grad['batch']} test images with the scratch model's weights, autograd's "
        "gradient of the summed cross-entropy with respect to the logits differs from "
        f"<code>softmax(O) - onehot(y)</code> by at most <b>{grad['max_abs_difference']:.3g}</b> "
        f"(the largest gradient entry is {grad['largest_gradient']:.3g}).</p>",
    ]
    return "".join(parts)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def metrics_table_html(metrics: dict[str, dict[str, float]], labels: dict[str, str] = METRIC_LABELS) -> str:
    """Models as rows, metrics as columns; every value carries data-model / data-metric for machines."""
    columns = [c for c in labels if any(c in m for m in metrics.values())]
    head = "".join(f"<th>{html.escape(labels[c])}</th>" for c in columns)
    rows = []
    for model, values in metrics.items():
        cells = "".join(
            f'<td class="metric" data-model="{html.escape(model)}" data-metric="{c}">'
            f'{values[c]:.4f}</td>' if c in values else "<td>-</td>"
            for c in columns
        )
        rows.append(f"<tr><th>{html.escape(model)}</th>{cells}</tr>")
    return f'<table class="metrics"><tr><th>model</th>{head}</tr>{"".join(rows)}</table>'


def per_class_table_html(rows: list[dict]) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    classes = list(dict.fromkeys(r["class"] for r in rows))
    head = "".join(f"<th colspan=3>{html.escape(m)}</th>" for m in models)
    sub = "<th>precision</th><th>recall</th><th>F1</th>" * len(models)
    body = []
    for c in classes:
        cells = ""
        for m in models:
            r = next(r for r in rows if r["model"] == m and r["class"] == c)
            cells += f"<td>{r['precision']:.3f}</td><td>{r['recall']:.3f}</td><td>{r['f1']:.3f}</td>"
        body.append(f"<tr><th>{html.escape(c)}</th>{cells}</tr>")
    return (f'<table class="per-class"><tr><th rowspan=2>class</th>{head}</tr><tr>{sub}</tr>'
            f'{"".join(body)}</table>')


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; }
th { background: #f4f4f4; } tr > th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: .8em 0; }
.note { color: #555; font-size: .92em; }
"""


def render_html(title: str, intro: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{intro}</p>"]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p class=note>{section.text}</p>")
        if section.table_html:
            parts.append(section.table_html)
        for alt, png in section.images:
            parts.append(f'<img alt="{html.escape(alt)}" src="{png_data_uri(png)}">')
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def render_markdown(title: str, metrics: dict[str, dict[str, float]], figures: list[tuple[str, str]],
                    notes: list[str], labels: dict[str, str] = METRIC_LABELS) -> str:
    """A short summary: the metrics table and links to the figures written beside it."""
    columns = [c for c in labels if any(c in m for m in metrics.values())]
    lines = [f"# {title}", "", "| model | " + " | ".join(labels[c] for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for model, values in metrics.items():
        lines.append(f"| {model} | " + " | ".join(f"{values[c]:.4f}" if c in values else "-" for c in columns) + " |")
    lines += [""] + [f"- {note}" for note in notes] + [""]
    lines += [f"![{alt}]({path})" for alt, path in figures]
    return "\n".join(lines) + "\n"


TITLE = "Softmax regression on Fashion-MNIST"


def report_page(intro: str, metrics: dict[str, dict[str, float]], histories: dict, best: str,
                per_class: list[dict], worked: str, figures: dict[str, bytes], confusion: dict[str, bytes],
                preview: bytes, calibration: dict[str, tuple[bytes, str]],
                validation: str) -> tuple[str, str]:
    """The report as ``(HTML page, Markdown summary)``: ``intro`` (HTML), the scores, the figures (by file
    name), each model's confusion matrix, its reliability diagram with a sentence on it (``calibration``),
    the worked examples and the data preview; ``validation``: the split that picked the best model."""
    labels = metric_labels(validation)
    notes = [
        f"Best model on {validation}: {best} ({labels['val_accuracy']} {metrics[best]['val_accuracy']:.4f}).",
        *(sentence for _, sentence in calibration.values()),
        *(chapter_bar(kind, {"train loss": history[-1].train_loss, "train accuracy": history[-1].train_acc,
                             "test accuracy": metrics[kind]["test_accuracy"]})
          for kind, history in histories.items()),
    ]
    sections = [
        Section("Results on the test set", " ".join(notes), table_html=metrics_table_html(metrics, labels)),
        Section("Predictions", "The chapter's predict_ch3: test images titled with the true and the "
                "predicted class.", [("predictions on the first test images", figures["predictions.png"])]),
        Section("Most confident mistakes", "Wrong predictions made with the highest probability: where "
                "the model is sure and wrong.", [("most confident mistakes", figures["mistakes.png"])]),
        Section("Training curves", "Per epoch: mean train loss, train accuracy, validation accuracy.",
                [("training curves of both models", figures["training_curves.png"])]),
        Section("Confusion matrices", "Rows: true class; columns: predicted class; counts in the cells.",
                [(f"{name} confusion matrix", png) for name, png in confusion.items()]),
        Section("Calibration: are the probabilities honest?",
                " ".join([CALIBRATION_INTRO, *(sentence for _, sentence in calibration.values())]),
                [(f"{name} reliability diagram", png) for name, (png, _) in calibration.items()]),
        Section("Per-class precision, recall and F1", table_html=per_class_table_html(per_class),
                images=[("per-class F1", figures["per_class_f1.png"])]),
        Section("Loss functions", "The chapter's regression losses: L2, L1 and Huber's robust loss, with "
                "their derivatives and the likelihoods exp(-loss).",
                [("L2, L1 and Huber losses", figures["loss_functions.png"])]),
        Section("The chapter, worked", WORKED_INTRO, table_html=worked),
        Section("The data", "Training images with their text labels, as in the chapter.",
                [("Fashion-MNIST training images", preview)]),
    ]
    page = render_html(TITLE, intro, sections)
    summary = render_markdown(TITLE, metrics, [(name, f"figures/{name}") for name in figures], notes, labels)
    return page, summary
