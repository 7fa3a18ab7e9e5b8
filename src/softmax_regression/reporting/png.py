"""Figures as PNG bytes: the one way every stage renders a figure.

Built on ``matplotlib.figure.Figure`` directly (no pyplot state machine), so
figures never leak between calls and nothing needs a display.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure

PNG_METADATA = {"Software": None}
"""No version stamp in the PNGs, so equal figures are equal bytes across machines."""


def figure_png_bytes(fig: Figure, dpi: int = 100, crop: bool = True) -> bytes:
    """The figure as PNG bytes. ``crop`` cuts it to what is drawn (``bbox_inches="tight"``), which draws
    it twice; a figure whose fixed margins hold all it draws (:func:`confusion_matrix_figure`) is drawn
    once, as it is, with ``crop=False``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata=PNG_METADATA, **({"bbox_inches": "tight"} if crop else {}))
    return buffer.getvalue()
