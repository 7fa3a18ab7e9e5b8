"""Everything that talks to MLflow, bottom up: ``store`` (where runs go, checked), ``runs`` (opening one, its
tags, logging into it), ``model_runs`` (the run of a model file, found or created), ``logged_models`` (a model
file's two MLflow models) and ``registry`` (the registered versions, ``@champion``, loading a model by URI)."""
