"""Everything that talks to MLflow, bottom up: ``store`` (where runs go, checked), ``runs`` (opening one, its
tags, logging into it), ``logged_models`` (a model file and its two MLflow models, and the run of a file) and
``registry`` (the registered versions, ``@champion``, loading a model by URI)."""
