"""The reports' matplotlib figures: made without pyplot, coloured by arm, written as PNG whole or not at all."""
from __future__ import annotations

from nnunet_cmcl.atomic import write_atomically


def new_figure(width: float, height: float):
    """A matplotlib Figure of ``width`` x ``height`` inches at 100 dpi, with an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def arm_color(arms: list[str], arm: str) -> str:
    """The colour of ``arm``: matplotlib's C0, C1, ... by its place in ``arms`` (black if absent), the same in
    every figure of a report."""
    return f"C{arms.index(arm) % 10}" if arm in arms else "black"


def save_png(fig, path: str) -> None:
    """Lays ``fig`` out and writes it to ``path`` as PNG, atomically."""
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))
