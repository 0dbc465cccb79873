"""Throughput of resnet_ms on this machine, against PyTorch eager and the hardware.

One run measures, at fp32 and 10 classes:
  train     the project's training step (what train.py runs) per model and batch
  eval      its evaluation step at the largest batch
  pipeline  the CIFAR-10 training input pipeline alone (augmentation on, no model)
  torch     PyTorch eager on the same architectures (benchmarks/torch_ref.py, own process)
  matmul    numpy's float32 matrix-product rate, and from it the ResNet-50 compute bound
and prints one table of images/s and ratios; the same goes to a JSON file.

    python benchmarks/bench.py [--models ...] [--batches ...] [--smoke] [--out FILE]
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

# Measure what the scripts run: their default loads resnet_ms's CPU kernels (train.py);
# RESNET_MS_KERNELS=native measures MindSpore's own.
os.environ.setdefault("RESNET_MS_KERNELS", "auto")

import resnet_ms  # noqa: E402,F401  (first: the CPU fast path must be set before MindSpore loads)
from resnet_ms.machine import cpu_info  # noqa: E402
from resnet_ms.runtime import FAST_PATH, KERNELS, fetch, init_context  # noqa: E402
from timing import median_seconds  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)

# The issue's cost of one ResNet-50 training step per 32 px image (forward +
# backward, i.e. about 3x the forward's multiply-adds x 2 FLOP each).
RESNET50_TRAIN_GFLOP_32PX = 0.50
DEFAULT_DATA_DIR = "data/cifar10"  # train.py's default: the git-ignored data folder


# ---------------------------------------------------------------- machine

def machine_info():
    cpu = cpu_info()
    flags, model = cpu["flags"], cpu["model"] or platform.processor()
    import mindspore as ms
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "avx2": "avx2" in flags,
            "avx512f": "avx512f" in flags, "python": platform.python_version(),
            "mindspore": ms.__version__, "numpy": np.__version__, "fast_path": FAST_PATH, "kernels": KERNELS}


def git_commit():
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---------------------------------------------------------------- measurements

def synthetic_batch(batch, size, num_classes=10, seed=0):
    import mindspore as ms
    rng = np.random.default_rng(seed)
    images = ms.Tensor(rng.standard_normal((batch, 3, size, size), dtype=np.float32))
    labels = ms.Tensor(rng.integers(0, num_classes, batch).astype(np.int32))
    return images, labels


def bench_train(name, batch, size, steps, warmup, num_classes=10):
    """images/s of resnet_ms.engine's training step, built as trainer.run builds it."""
    from mindspore import nn
    from resnet_ms.engine import build_optimizer, cosine_lr, make_train_step
    net = resnet_ms.build_model(name, num_classes)
    net.set_train(True)
    total = warmup + steps
    optimizer = build_optimizer(net, cosine_lr(0.1, 1e-4, total, 1))
    # A fresh step per case, so MindSpore warns that `step` "has been compiled
    # again": expected here (new network, new shapes), and outside the timing.
    step = make_train_step(net, nn.CrossEntropyLoss(), optimizer)
    images, labels = synthetic_batch(batch, size, num_classes)

    def one():  # waits for the step (MindSpore runs it asynchronously) as the trainer does
        loss, correct, _ = step(images, labels)
        return fetch(loss, correct)
    return batch / median_seconds(one, steps, warmup)


def bench_eval(name, batch, size, steps, warmup, num_classes=10):
    from resnet_ms.engine import make_eval_step
    net = resnet_ms.build_model(name, num_classes)
    net.set_train(False)
    step = make_eval_step(net)
    images, _ = synthetic_batch(batch, size, num_classes)
    return batch / median_seconds(lambda: fetch(step(images)), steps, warmup)


def bench_pipeline(data_dir, batch, size, batches, workers):
    """images/s of the training loader alone, over real CIFAR-10 with augmentation.

    Timed from the first batch on, so worker start-up is left out, as it is
    from the training rate.
    """
    from resnet_ms.data import CIFAR10_MEAN, CIFAR10_STD, make_loader, open_source
    source = open_source("cifar10", data_dir, data_url="")  # never download from a benchmark
    loader = make_loader(source, "train", batch, size, CIFAR10_MEAN, CIFAR10_STD, train=True,
                         epoch=1, limit_batches=batches + 1, workers=workers)
    images, start = 0, None
    for x, _ in loader.create_tuple_iterator(num_epochs=1):
        x.asnumpy()  # the training step reads the batch too
        if start is None:
            start = time.perf_counter()
        else:
            images += x.shape[0]
    return images / (time.perf_counter() - start)


def matmul_gflops(n, repeats):
    """float32 n x n matrix product rate of numpy's BLAS: 2 n^3 FLOP per product."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    seconds = median_seconds(lambda: a @ b, repeats, 1)
    return 2 * n ** 3 / seconds / 1e9


def clean_environment():
    """This process's environment without what resnet_ms and MindSpore set for themselves
    (`import resnet_ms` caps oneDNN at AVX2 on AVX-512 CPUs: PyTorch must not inherit that)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ONEDNN_", "DNNL_", "MS_", "RESNET_MS_", "GLOG_"))}


def bench_torch(python, args):
    """PyTorch cases from torch_ref.py in `python`; (cases, version) or (None, reason)."""
    cmd = [python, os.path.join(HERE, "torch_ref.py"), "--models", *args.models,
           "--batches", *map(str, args.batches), "--image_size", str(args.image_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_environment())
    except OSError as e:
        return None, f"cannot run {python}: {e.strerror}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{python} torch_ref.py exited {proc.returncode}: {last}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["cases"], f"torch {result['version']}, {result['threads']} threads"


# ---------------------------------------------------------------- table

def add_ratios(cases, bound):
    """Ratios the issue asks about, stored on each case."""
    def find(kind, model, batch=None):
        for c in cases:
            if c["kind"] == kind and c.get("model") == model and (batch is None or c.get("batch") == batch):
                return c["images_per_s"]
        return None

    pipeline = next((c["images_per_s"] for c in cases if c["kind"] == "pipeline"), None)
    for c in cases:
        if c["kind"] in ("train", "eval"):
            torch_rate = find("torch_" + c["kind"], c["model"], c["batch"])
            c["vs_torch"] = c["images_per_s"] / torch_rate if torch_rate else None
        if c["kind"] in ("train", "torch_train") and c["model"] == "resnet50" and bound:
            c["vs_bound"] = c["images_per_s"] / bound
        if c["kind"] == "train" and pipeline:
            c["pipeline_over_train"] = pipeline / c["images_per_s"]
        if c["kind"] == "eval":
            train_rate = find("train", c["model"], c["batch"])
            c["eval_over_train"] = c["images_per_s"] / train_rate if train_rate else None


def format_table(cases):
    cols = [("case", None), ("images/s", "images_per_s"), ("vs torch", "vs_torch"),
            ("vs bound", "vs_bound"), ("eval/train", "eval_over_train"),
            ("pipeline/train", "pipeline_over_train")]
    rows = []
    for c in cases:
        label = " ".join(str(c[k]) for k in ("kind", "model") if c.get(k))
        label += f" b{c['batch']}" if c.get("batch") else ""
        cells = [label]
        for _, key in cols[1:]:
            v = c.get(key)
            cells.append("-" if v is None else f"{v:.1f}" if key == "images_per_s" else f"{v:.2f}x")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows + [[h for h, _ in cols]]) for i in range(len(cols))]
    line = lambda r: "| " + " | ".join(s.ljust(w) for s, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line([h for h, _ in cols]), line(["-" * w for w in widths])] + [line(r) for r in rows])


# ---------------------------------------------------------------- main

def main(args):
    if args.smoke:  # proves every part runs, in seconds; the numbers mean nothing
        args.steps, args.warmup, args.pipeline_batches, args.matmul_n = 2, 1, 3, 512
    init_context("auto", "graph", seed=0)
    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "commit": git_commit(), "machine": machine_info(), "smoke": args.smoke,
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "skipped": {}}
    cases = []

    def note(case):
        print(f"  {case['kind']} {case.get('model', '')} b{case.get('batch', '-')}: "
              f"{case['images_per_s']:.1f} images/s", flush=True)
        cases.append(case)

    # The matrix product first, while nothing else has warmed up the caches or the clock.
    gflops = matmul_gflops(args.matmul_n, 3 if args.smoke else 10)
    bound = gflops / (RESNET50_TRAIN_GFLOP_32PX * (args.image_size / 32) ** 2)  # FLOPs grow with pixels
    report["matmul"] = {"n": args.matmul_n, "gflops": gflops, "resnet50_bound_images_per_s": bound}
    print(f"matmul fp32 {args.matmul_n}^2: {gflops:.1f} GFLOP/s -> ResNet-50 bound {bound:.1f} images/s")

    for name in args.models:
        for batch in args.batches:
            note({"kind": "train", "model": name, "batch": batch,
                  "images_per_s": bench_train(name, batch, args.image_size, args.steps, args.warmup)})
        batch = max(args.batches)
        note({"kind": "eval", "model": name, "batch": batch,
              "images_per_s": bench_eval(name, batch, args.image_size, args.steps, args.warmup)})

    data_dir = args.data_dir or DEFAULT_DATA_DIR
    if args.data_dir or os.path.isdir(DEFAULT_DATA_DIR):
        note({"kind": "pipeline", "model": "cifar10", "batch": max(args.batches),
              "images_per_s": bench_pipeline(data_dir, max(args.batches), args.image_size,
                                             args.pipeline_batches, args.workers)})
    else:
        report["skipped"]["pipeline"] = f"no CIFAR-10 at {DEFAULT_DATA_DIR}; pass --data_dir"

    if args.no_torch:
        report["skipped"]["torch"] = "--no_torch"
    else:
        torch_cases, info = bench_torch(args.torch_python, args)
        if torch_cases is None:
            report["skipped"]["torch"] = info
        else:
            report["machine"]["torch"] = info
            for case in torch_cases:
                note(case)
    for part, reason in report["skipped"].items():
        print(f"{part}: skipped: {reason}")

    cases.append({"kind": "bound", "model": "resnet50", "images_per_s": bound})
    add_ratios(cases, bound)
    report["cases"] = cases
    table = format_table(cases)
    m = report["machine"]
    print(f"\n{report['date']}  commit {report['commit']}  {m['cpu']}, {m['cores']} cores, "
          f"avx2={m['avx2']} avx512f={m['avx512f']}, mindspore {m['mindspore']}, "
          f"{m.get('torch', 'torch skipped')}" + ("  [SMOKE RUN: not a measurement]" if args.smoke else ""))
    print(table)
    report["table"] = table
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        print(f"written {args.out}")
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Throughput of resnet_ms vs PyTorch eager and the hardware.")
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet50"], choices=resnet_ms.models.MODEL_NAMES)
    p.add_argument("--batches", nargs="+", type=int, default=[32, 64, 128])
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed steps per case (median taken)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (include graph compilation)")
    p.add_argument("--data_dir", default=None, help=f"CIFAR-10 for the pipeline case (default {DEFAULT_DATA_DIR} if present)")
    p.add_argument("--pipeline_batches", type=int, default=100, help="batches timed in the pipeline case")
    p.add_argument("--workers", type=int, default=2, help="loader workers, as train.py's --num_workers")
    p.add_argument("--matmul_n", type=int, default=4096)
    p.add_argument("--torch_python", default=sys.executable,
                   help="interpreter with torch for the reference (default: this one)")
    p.add_argument("--no_torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--smoke", action="store_true", help="2 steps per case, small matmul: checks that it runs")
    p.add_argument("--out", default=os.path.join(HERE, "last_run.json"))
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
