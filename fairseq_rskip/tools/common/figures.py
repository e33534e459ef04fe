"""Figures of the tools: matplotlib without a display, saved in one way."""

import logging
from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), its font log quiet."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (its folder made if needed), close it; the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
