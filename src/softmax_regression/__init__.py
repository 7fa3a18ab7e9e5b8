"""Softmax regression on Fashion-MNIST, after Dive into Deep Learning (chapter 3).

The library knows nothing of the pipeline that runs it: ``pipeline/`` holds
one thin command per stage that reads params.yaml and calls in here, passing
in the project root and the tags to put on runs. Its packages import only
downward: ``data``, ``models``, ``training``, ``evaluation``, ``reporting``,
``tracking``, ``predicting`` (a test reads every import and checks the order).
"""

CLASS_NAMES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
"""Text labels of the ten classes, in label order (as in the chapter's get_fashion_mnist_labels)."""

__version__ = "0.1.0"
