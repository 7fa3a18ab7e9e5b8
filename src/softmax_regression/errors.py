"""Errors as the one line a command prints."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def failure_line(exc: BaseException) -> str:
    """What a command prints for a failure it did not foresee: :func:`mlflow_error_line` for MLflow's,
    else :func:`one_line`."""
    return mlflow_error_line(exc) or one_line(exc)


def one_line(exc: BaseException) -> str:
    """An exception as one line: its first line, or its type where it has no message."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return first or type(exc).__name__


def mlflow_error_line(exc: BaseException) -> str | None:
    """An error that MLflow raised (its own exception, or any error from inside its code: a full disk under
    its artifact folder, an internal ``AttributeError``) as one line naming the store it was talking to and
    the cause in a sentence or two; None for an error that did not come from MLflow."""
    if "mlflow" not in sys.modules or not raised_by_mlflow(exc):
        return None
    import mlflow

    cause = sentences(str(exc))
    if not isinstance(exc, (mlflow.exceptions.MlflowException, OSError)):  # an internal error: its type says most
        cause = f"{type(exc).__name__}: {cause}" if cause else ""
    return f"MLflow store {mlflow.get_tracking_uri()}: {cause or type(exc).__name__}"


def raised_by_mlflow(exc: BaseException) -> bool:
    """Whether ``exc`` is MLflow's, or was raised while MLflow's code ran: the innermost frame of the traceback
    that is neither the standard library nor another installed package lies in MLflow (and not in the
    project's own code that MLflow called back, a model's ``predict``)."""
    import sysconfig

    import mlflow

    if isinstance(exc, mlflow.exceptions.MlflowException):
        return True
    mlflow_dir = str(Path(mlflow.__file__).resolve().parent) + os.sep
    others = {str(Path(sysconfig.get_paths()[key]).resolve()) + os.sep for key in ("stdlib", "purelib", "platlib")}
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(str(Path(tb.tb_frame.f_code.co_filename).resolve()))
        tb = tb.tb_next
    for filename in reversed(frames):
        if filename.startswith(mlflow_dir):
            return True
        if not any(filename.startswith(other) for other in others):
            return False  # the project's own code
    return False


def sentences(text: str, limit: int = 300) -> str:
    """The first line of ``text``, cut at the end of a sentence within ``limit`` characters (or at the limit):
    MLflow's messages run to a paragraph of advice on one line."""
    first = (text.strip().splitlines() or [""])[0].strip()
    if len(first) <= limit:
        return first
    end = first.rfind(". ", 0, limit)
    return first[:end + 1] if end > 0 else first[:limit - 3].rstrip() + "..."
