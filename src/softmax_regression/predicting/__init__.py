"""``fmnist-predict``: a model file or an MLflow model on a user's own images."""
