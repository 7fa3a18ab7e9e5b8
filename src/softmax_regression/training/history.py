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
    if not records:
        raise ValueError("holds no epoch")
    return records

