"""What DVC tells a stage through its environment, turned into plain arguments for the library.

Under ``dvc exp run --queue`` / ``--temp`` a stage runs in a temporary copy of
the repository under ``.dvc/tmp/exps/``; DVC then sets ``DVC_ROOT`` to the
original root. The default MLflow store is resolved against it, so runs
outlive the copy. ``DVC_EXP_NAME`` and ``DVC_STAGE`` become run tags.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The original repository root: ``DVC_ROOT`` under ``dvc exp``, else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def run_tags() -> dict[str, str]:
    """``dvc_exp_name`` and ``dvc_stage`` where DVC set them."""
    tags = {}
    for variable, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_STAGE", "dvc_stage")):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return tags
