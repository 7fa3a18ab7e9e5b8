"""The MLflow side of a stage: the project's experiment, the tags of a run, the run of a new model file.

The library takes the project root and the tags as arguments; here they come
from DVC's environment and from the files the stage reads. Under ``dvc exp run
--queue`` / ``--temp`` a stage runs in a temporary copy of the repository under
``.dvc/tmp/exps/`` and DVC sets ``DVC_ROOT`` to the original root: the default
store is resolved against it, so runs outlive the copy. ``DVC_EXP_NAME`` and
``DVC_STAGE`` become run tags.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import paths
from softmax_regression.checksums import files_digest, sha256_hex
from softmax_regression.data.splits import split_files
from softmax_regression.tracking.runs import MODEL_SHA256_TAG, standard_tags, tracked_run
from softmax_regression.tracking.store import configure, experiment_id


def project_root() -> Path:
    """The original repository root: ``DVC_ROOT`` under ``dvc exp``, else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def open_experiment(name: str) -> str:
    """Point MLflow at the project's store (checked first) and return the experiment's id."""
    root = project_root()
    configure(root)
    return experiment_id(name, root)


def dvc_tags() -> dict[str, str]:
    """``dvc_exp_name`` and ``dvc_stage`` where DVC set them."""
    return {tag: os.environ[variable] for variable, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_STAGE", "dvc_stage"))
            if os.environ.get(variable)}


def run_tags_for(implementation: str, params_path: str | Path, processed_dir: Path = paths.PROCESSED_DIR
                 ) -> dict[str, str]:
    """The tags of a run of ``implementation`` (scratch, concise, baseline, data): git state, the params in
    force, one checksum of the processed splits (what ties a run to the data it saw), and DVC's names."""
    return standard_tags(implementation, params_path, files_digest(split_files(processed_dir)), extra=dvc_tags())


def run_name(kind: str) -> str:
    """What tells a stage's run from the others in the UI: its model, and the DVC experiment it belongs to."""
    experiment = os.environ.get("DVC_EXP_NAME")
    return f"{kind} · {experiment}" if experiment else kind


def new_model_run(experiment_id: str, kind: str, params_path: str | Path, checkpoint: bytes, started: float):
    """The run of a freshly trained model file (``with new_model_run(...) as run``), tagged with the file's SHA-256,
    by which evaluate and report find it; FAILED or KILLED on an error. It starts when the training did
    (``started``, a ``time.time()``), so its duration is the training's and the logging's; it is created only
    once the model exists, so a stage killed in mid-training (SIGKILL too) leaves no run behind."""
    import mlflow
    from mlflow.tracking.context.registry import resolve_tags  # the source, user and git tags start_run adds

    tags = resolve_tags({**run_tags_for(kind, params_path), MODEL_SHA256_TAG: sha256_hex(checkpoint)})
    run = mlflow.MlflowClient().create_run(experiment_id, start_time=int(started * 1000), tags=tags,
                                           run_name=run_name(kind))
    return tracked_run(created=True, run_id=run.info.run_id)
