"""Tuning the chapter's model on the validation split: a search space, an Optuna study that any number of
workers share through its storage, and the winner's params.

This file holds the choices of a search (no Optuna: the search file's check reads them).
"""

SAMPLERS = ("tpe", "random", "grid")
"""``sampler`` in the search file: Optuna's TPE, uniform random sampling, or every combination of the choices."""
PRUNERS = ("median", "none")
"""``pruner`` in the search file: stop a trial whose validation accuracy is below the median of the earlier
trials' at the same epoch, or never."""
