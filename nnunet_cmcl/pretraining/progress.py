"""progress.png for CMCL pretraining: loss terms, retrieval, collapse and geometry metrics, lr, epoch time."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402

from nnunet_cmcl.atomic import write_atomically  # noqa: E402

PANELS = (
    ("loss", ("train_losses", "train_loss_global", "train_loss_dense", "val_losses")),
    ("retrieval top-1", ("val_retrieval_top1", "val_dense_retrieval_top1")),
    ("embedding geometry", ("val_embedding_std", "val_alignment", "val_uniformity")),
    ("learning rate", ("lrs",)),
)


def plot_progress(logged: dict[str, list], output_folder: str) -> str:
    """Writes ``progress.png`` from nnU-Net's logger lists (one value per epoch); returns its path."""
    epochs = min(len(logged["train_losses"]), len(logged["val_losses"]))
    fig, axes = plt.subplots(len(PANELS) + 1, 1, figsize=(10, 3.2 * (len(PANELS) + 1)))
    for ax, (title, keys) in zip(axes, PANELS):
        for key in keys:
            values = logged.get(key, [])[:epochs]
            if values:
                ax.plot(range(len(values)), values, label=key, linewidth=2)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(loc="best", fontsize=8)
    starts, ends = logged["epoch_start_timestamps"], logged["epoch_end_timestamps"]
    axes[-1].plot([e - s for s, e in zip(starts, ends)], label="epoch time [s]", linewidth=2)
    axes[-1].set_ylim(bottom=0)
    axes[-1].set_xlabel("epoch")
    axes[-1].legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = os.path.join(output_folder, "progress.png")
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))  # never a half-written plot
    finally:
        plt.close(fig)
    return path
