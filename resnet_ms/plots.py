"""Pictures: training curves, confusion matrices, prediction grids (headless)."""
import matplotlib

matplotlib.use("Agg")  # no window, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .files import atomic_path  # noqa: E402


def _save(fig, path):
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def plot_curves(rows, path):
    """Loss and accuracy per epoch (rows of metrics.csv), training against validation."""
    epochs = [int(r["epoch"]) for r in rows]

    def column(key, scale=1.0):  # an epoch that was not evaluated is a gap
        return [scale * float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        ax_loss.plot(epochs, column(key), marker="o", label=label)
    for key, label in (("train_acc", "train"), ("val_acc", "validation")):
        ax_acc.plot(epochs, column(key, 100), marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 %", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xticks(epochs)  # whole epochs only
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion(confusion, class_names, path):
    """Counts on the left, rows normalised to 1 (per-class recall) on the right."""
    confusion = np.asarray(confusion)
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    n = len(class_names)
    size = max(5.0, 0.45 * n)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, data, title, fmt in ((axes[0], confusion, "counts", "d"),
                                 (axes[1], rows, "row-normalised", ".2f")):
        im = ax.imshow(data, cmap="Blues")
        ax.set(title=title, xlabel="predicted", ylabel="true",
               xticks=range(n), yticks=range(n))
        ax.set_xticklabels(class_names, rotation=90)
        ax.set_yticklabels(class_names)
        if n <= 20:  # numbers stay readable up to about 20 classes
            top = data.max() if data.size else 0
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=7,
                            color="white" if data[i, j] > top / 2 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_predictions(images, predicted, confidence, class_names, path, true=None, columns=6, names=None):
    """A grid of images titled 'predicted (confidence)'; blue when right, red when wrong.

    `images` are HWC uint8; `true` holds -1 (or is None) where the label is unknown,
    and those titles are black. `names` (file names) head the titles when given.
    """
    n = len(images)
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k])
        title = f"{class_names[predicted[k]]} ({100 * confidence[k]:.0f}%)"
        if names is not None:
            title = f"{names[k]}\n{title}"
        color = "black"
        if true is not None and true[k] >= 0:
            color = "blue" if true[k] == predicted[k] else "red"
            if true[k] != predicted[k]:
                title += f"\ntrue: {class_names[true[k]]}"
        ax.set_title(title, color=color, fontsize=9)
    return _save(fig, path)
