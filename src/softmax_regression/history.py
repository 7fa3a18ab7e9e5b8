"""The per-epoch record of a training run and its CSV form: what the curves, the plots and the report read.

No torch here: reading a history must not cost a torch import.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: float
    val_acc: float


HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_acc")


def history_csv(history: list[EpochRecord]) -> str:
    """CSV text of a history (plotting tools read it); floats in full ``repr`` precision."""
    lines = [",".join(HISTORY_COLUMNS)]
    for r in history:
        lines.append(f"{r.epoch},{r.train_loss!r},{r.train_acc!r},{r.val_acc!r}")
    return "\n".join(lines) + "\n"


def read_history_csv(text: str) -> list[EpochRecord]:
    rows = text.strip().splitlines()
    if not rows or tuple(rows[0].split(",")) != HISTORY_COLUMNS:
        raise ValueError(f"not a training history: header should be {','.join(HISTORY_COLUMNS)}")
    records = []
    for number, row in enumerate(rows[1:], start=2):
        try:
            epoch, loss, train_acc, val_acc = row.split(",")
            records.append(EpochRecord(int(epoch), float(loss), float(train_acc), float(val_acc)))
        except ValueError:
            raise ValueError(f"line {number} is not epoch,train_loss,train_acc,val_acc: {row[:80]!r}") from None
    return records


def read_history_file(path) -> list[EpochRecord]:
    """A history CSV file; an error names the file when it is damaged or holds no epoch."""
    from pathlib import Path

    path = Path(path)
    try:
        records = read_history_csv(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; run the train stage first") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({exc}); run the train stage again") from None
    if not records:
        raise ValueError(f"{path} holds no epoch; run the train stage again")
    return records
