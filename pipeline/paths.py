"""Where each stage reads and writes, relative to the project root (DVC runs stages from there)."""

from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

RAW_DIR = Path("data/raw")
PROCESSED_DIR = Path("data/processed")
DATA_REPORT_DIR = Path("reports/data")
STATS_JSON = DATA_REPORT_DIR / "stats.json"
PREVIEW_PNG = DATA_REPORT_DIR / "preview.png"

MODELS_DIR = Path("models")
TRAIN_REPORT_DIR = Path("reports/train")
EVAL_DIR = Path("reports/eval")
REPORT_DIR = Path("reports/report")


def model_path(kind: str) -> Path:
    return MODELS_DIR / f"{kind}.pt"


def history_path(kind: str) -> Path:
    return TRAIN_REPORT_DIR / f"{kind}_history.csv"


def curves_path(kind: str) -> Path:
    return TRAIN_REPORT_DIR / f"{kind}_curves.png"


EVAL_METRICS = EVAL_DIR / "metrics.json"
PER_CLASS_CSV = EVAL_DIR / "per_class.csv"
CONFUSION_DIR = EVAL_DIR / "confusion"
"""``<model>.csv`` of actual,predicted per test image: DVC plots with the confusion template."""
WORKED_JSON = EVAL_DIR / "worked.json"
"""The chapter's worked examples, computed with the scratch model's weights on the test split."""
CONFUSION_PNG_DIR = EVAL_DIR / "confusion_png"
"""``<model>.png`` heatmaps with counts in the cells."""
RELIABILITY_DIR = EVAL_DIR / "reliability"
"""``<model>.csv`` of confidence bins: accuracy against mean confidence, before and after temperature scaling."""
RELIABILITY_PNG_DIR = EVAL_DIR / "reliability_png"
"""``<model>.png`` reliability diagrams."""

REPORT_HTML = REPORT_DIR / "report.html"


def read_output(path: Path, parse: Callable[[str], T], stage: str) -> T:
    """Another stage's output, parsed; missing or damaged, an error that names the file and the stage."""
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; run the {stage} stage first") from None
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({type(exc).__name__}: {exc}); run the {stage} stage again") from None
