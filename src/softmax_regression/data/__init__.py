"""Fashion-MNIST from its files to a model's inputs: the IDX format, where the files come from, the splits,
the features and the minibatches.

This file holds the one choice of the data (no torch: the params check reads it).
"""

NORMALIZATIONS = ("none", "global", "per_pixel")
"""``data.normalize``, the default first: ``none`` is the chapter's (features in [0, 1]); the others
standardize by the training split's statistics (``features.py``)."""
