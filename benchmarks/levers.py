"""Throughput of the project's training step under one MindSpore setting.

    python benchmarks/levers.py SETTING [--model resnet50 --batch 64 --stem imagenet]   (SETTING: see SETTINGS)

One setting per process: MindSpore reads these when it compiles the first
graph, so they cannot be switched inside one run. Prints images/s (median
of the timed steps) and the first losses, which must not change with a
setting that only changes speed.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

# Measure what the scripts run: their default loads resnet_ms's CPU kernels (train.py);
# RESNET_MS_KERNELS=native measures MindSpore's own.
os.environ.setdefault("RESNET_MS_KERNELS", "auto")

import resnet_ms  # noqa: E402,F401  (first: the CPU fast path before MindSpore loads)
import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402

from resnet_ms.engine import build_optimizer, cosine_lr, make_train_step  # noqa: E402
from resnet_ms import build_model  # noqa: E402
from resnet_ms.models import STEMS  # noqa: E402
from resnet_ms.runtime import fetch, operator_threads  # noqa: E402
from timing import median_seconds  # noqa: E402

# MindSpore context settings; "env": resnet_ms's environment switches; "call": a
# MindSpore runtime call made before the network is built.
SETTINGS = {
    "default": {},
    "small_maps_conv": {"env": {"RESNET_MS_SMALL_MAPS": "conv"}},  # resnet_ms.smallmap off
    "jit_O0": {"jit_config": {"jit_level": "O0"}},
    "jit_O1": {"jit_config": {"jit_level": "O1"}},
    "jit_O2": {"jit_config": {"jit_level": "O2"}},
    "graph_kernel": {"enable_graph_kernel": True},
    # operator threads (MindSpore's default is one per core) and pinning to cores
    # (the scripts' default with resnet_ms's kernels is 1: runtime.operator_threads)
    "threads_1": {"call": lambda: ms.device_context.cpu.op_tuning.threads_num(1)},
    "threads_2": {"call": lambda: ms.device_context.cpu.op_tuning.threads_num(2)},  # MindSpore's own on 2 cores
    "threads_4": {"call": lambda: ms.device_context.cpu.op_tuning.threads_num(4)},
    "cpu_affinity": {"call": lambda: ms.runtime.set_cpu_affinity(True)},
    # the runtime's own threads (5 by default), which run independent ops side by side
    "dispatch_1": {"call": lambda: ms.runtime.dispatch_threads_num(1)},
    "dispatch_2": {"call": lambda: ms.runtime.dispatch_threads_num(2)},
    "launch_blocking": {"call": lambda: ms.runtime.launch_blocking()},
    "spin_wait": {},  # the step waited for on the caller's thread (MindSpore spins there)
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("setting", choices=list(SETTINGS))
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=6)
    # the price of larger maps at 32 px: layer1 sees 8x8 (imagenet), 16x16 (nopool), 32x32 (cifar)
    p.add_argument("--stem", choices=STEMS, default=None, help="default: the model's own")
    a = p.parse_args()
    setting = dict(SETTINGS[a.setting])
    os.environ.update(setting.pop("env", {}))
    setting.pop("call", operator_threads)()  # by default what init_context sets for the scripts
    ms.set_context(mode=ms.GRAPH_MODE, **setting)
    ms.set_seed(0)
    net = build_model(a.model, 10, **({"stem": a.stem} if a.stem else {}))
    step = make_train_step(net, nn.CrossEntropyLoss(), build_optimizer(net, cosine_lr(0.01, 0.001, 100)))
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((a.batch, 3, 32, 32)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, 10, a.batch).astype(np.int32))
    net.set_train(True)
    losses = [float(step(x, y)[0].asnumpy()) for _ in range(3)]  # also the warm-up (compilation)
    # as the scripts wait for a step (runtime.fetch); spin_wait: as Tensor.asnumpy does
    wait = (lambda t: t.asnumpy()) if a.setting == "spin_wait" else fetch
    seconds = median_seconds(lambda: wait(step(x, y)[0]), a.steps, 0)
    print(f"{a.setting}: {a.model} {net.stem} stem b{a.batch} {a.batch / seconds:.1f} images/s  first losses {losses}")


if __name__ == "__main__":
    main()
