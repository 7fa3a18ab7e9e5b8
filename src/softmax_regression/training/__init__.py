"""Training the chapter's two models: the loop, the learning-rate schedules and the per-epoch history.

This file holds the choices of training (no torch: the params check reads them).
"""

SCHEDULES = ("constant", "step", "cosine")
"""``train.schedule``, the default first: the learning rate per epoch (``loop.learning_rates``)."""
DEVICES = ("cpu", "cuda", "auto")
"""``train.device``, the default first: where the weights are computed (``loop.resolve_device``)."""
