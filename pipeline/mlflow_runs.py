"""How a stage meets MLflow: the project's store, its experiment, and the tags of a run.

The library takes the project root and the tags as arguments; here they come
from DVC's environment (see ``dvc_env``) and from params.yaml.
"""

from __future__ import annotations

from pathlib import Path

from softmax_regression import tracking
from softmax_regression.checksums import files_digest
from softmax_regression.dataset import split_files

from . import paths
from .dvc_env import project_root, run_tags


def open_experiment(name: str) -> str:
    """Point MLflow at the project's store (a server is checked first) and return the experiment's id."""
    root = project_root()
    tracking.configure(root)
    return tracking.experiment_id(name, root)


def dataset_sha256(processed_dir: Path = paths.PROCESSED_DIR) -> str:
    """One checksum of the processed splits: what ties a run to the data it saw."""
    return files_digest(split_files(processed_dir))


def run_tags_for(implementation: str, params_path: str | Path, processed_dir: Path = paths.PROCESSED_DIR
                 ) -> dict[str, str]:
    """The standard tags of a run of ``implementation`` (scratch, concise, baseline, data)."""
    return tracking.standard_tags(implementation, params_path, dataset_sha256(processed_dir), extra=run_tags())

