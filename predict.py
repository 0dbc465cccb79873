#!/usr/bin/env python
"""Predict the classes of image files with a checkpoint; one row per image into CSV or JSON.

    python predict.py --ckpt runs/train/best.ckpt --source photos/ --topk 5 --output preds.csv
    python predict.py --ckpt best.ckpt --source a.jpg b.png --output preds.json --format json

Folders are walked recursively. Images are decoded and preprocessed exactly as
evaluation of the checkpoint does it; a file that cannot be read gets a row with
the reason in its `error` column and does not stop the others.
"""
import os
import sys

# The scripts run in graph mode and do their own eager work in NumPy, where
# resnet_ms's CPU kernels are safe; a plain `import resnet_ms` leaves them off
# (resnet_ms/cpu_kernels.py says why). Set before resnet_ms is imported.
os.environ.setdefault("RESNET_MS_KERNELS", "auto")

from resnet_ms import cli  # noqa: E402
from resnet_ms.errors import UserError  # noqa: E402
from resnet_ms.tta import TTA, resolve_tta  # noqa: E402


def main(argv=None):
    p = cli.add_checkpoint_flags(cli.parser(__doc__))
    p.add_argument("--source", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--output", required=True, help="file to write (.csv or .json)")
    p.add_argument("--format", choices=["csv", "json"], help="default: from --output's suffix")
    p.add_argument("--topk", type=int, default=5, help="classes per image, most probable first")
    p.add_argument("--batch_size", type=int, default=32, help="images per step (the last one is padded)")
    p.add_argument("--tta", choices=("auto",) + TTA, default="auto",
                   help="test-time augmentation; auto: the checkpoint's recipe's, as eval.py")
    a = p.parse_args(argv)
    fmt = a.format or ("json" if a.output.lower().endswith(".json") else "csv")
    cli.writable_file(a.output, "--output", "." + fmt)
    cli.positive(a.topk, "--topk")
    cli.positive(a.batch_size, "--batch_size")
    from resnet_ms.inference import find_images, predict_files, write_predictions
    from resnet_ms.runtime import init_context
    from resnet_ms.weights import load_model
    files, others = find_images(a.source)
    if not files:
        raise UserError(f"--source {' '.join(a.source)}: no image files found"
                        + (f" ({len(others)} other files, e.g. {others[0]})" if others else ""))
    init_context()  # graph mode: every batch is padded to --batch_size, so it compiles once
    net, record = load_model(a.ckpt, a.model, a.num_classes)
    topk = min(a.topk, record.num_classes)
    rows = list(predict_files(net, record, files, a.batch_size, topk, progress=cli.progress(len(files), "predict"),
                              tta=resolve_tta(a.tta, record)))
    write_predictions(rows, a.output, fmt, topk)
    bad = [r for r in rows if r[2]]
    print(f"{len(rows) - len(bad)} image(s) predicted -> {a.output}"
          + (f"; {len(bad)} unreadable (see the error column), e.g. {bad[0][0]}: {bad[0][2]}" if bad else "")
          + (f"; {len(others)} non-image file(s) skipped" if others else ""))


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
