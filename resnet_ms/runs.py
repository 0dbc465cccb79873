"""A training run's folder: what it holds, written atomically, and when it may be reused.

    <output_dir>/best.ckpt     the epoch with the highest selection accuracy
    <output_dir>/last.ckpt     every epoch, with optimizer state (for --resume)
    <output_dir>/metrics.csv   one row per epoch (METRIC_FIELDS)
    <output_dir>/config.yaml   the resolved configuration
    <output_dir>/curves.png    loss and accuracy per epoch
    <output_dir>/confusion.png the best epoch's confusion matrix on the selection split
    <output_dir>/stopped.txt   why --patience ended the run early (if it did)
"""
import csv
import io
import os

import yaml

from .checkpoint import save_checkpoint
from .errors import UserError
from .files import remove_temporaries, write_text

METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5",
                 "val_images", "train_images_per_s", "epoch_s"]


class RunFolder:
    def __init__(self, path):
        self.path = path
        self.last, self.best = self.file("last.ckpt"), self.file("best.ckpt")
        self.metrics, self.config = self.file("metrics.csv"), self.file("config.yaml")
        self.curves, self.confusion = self.file("curves.png"), self.file("confusion.png")
        self.stopped = self.file("stopped.txt")

    def file(self, name):
        return os.path.join(self.path, name)

    def check(self, resume):
        """A folder that holds a run is continued with --resume, never overwritten."""
        if os.path.exists(self.last) and not resume:
            raise UserError(f"--output_dir {self.path}: already holds a run (last.ckpt); "
                            "pass --resume to continue it, or choose another --output_dir")
        if resume and not os.path.exists(self.last):
            raise UserError(f"--resume: no {self.last} to continue from")

    def prepare(self):
        """Create the folder and sweep up temporaries a killed run left."""
        os.makedirs(self.path, exist_ok=True)
        remove_temporaries(self.path)

    def write_config(self, data):
        write_text(self.config, yaml.safe_dump(data, sort_keys=False))

    def read_metrics(self, up_to_epoch):
        """The rows of earlier epochs, up to the one last.ckpt holds (a resume drops later ones)."""
        if not os.path.isfile(self.metrics):
            return []
        with open(self.metrics, newline="") as f:
            return [r for r in csv.DictReader(f) if int(r["epoch"]) <= up_to_epoch]

    def write_metrics(self, rows):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, METRIC_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.metrics, buf.getvalue())

    def save_epoch(self, net, kept, record, optimizer, rows, improved, ema=None):
        """Metrics first (a resume drops rows past last.ckpt's epoch), then best, then last.
        best.ckpt holds `kept` (the evaluated network: the weight average, if any); last.ckpt
        the trained `net` with the optimizer's and the average's state."""
        self.write_metrics(rows)
        if improved:
            save_checkpoint(self.best, kept, record)
        save_checkpoint(self.last, net, record, optimizer, ema.state() if ema is not None else ())
        if record.stop_reason:
            write_text(self.stopped, record.stop_reason + "\n")
