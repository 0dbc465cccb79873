"""Process-level settings: the CPU fast path, device choice, graph mode.

`apply_cpu_fast_path` must run before MindSpore is first imported, because
oneDNN reads its environment once, when the library loads; `resnet_ms/__init__`
calls it first thing.
"""
import logging
import os
import sys

from .errors import UserError

log = logging.getLogger("resnet_ms")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def apply_cpu_fast_path():
    """Cap oneDNN at AVX2 on AVX-512 CPUs, unless the user set the variable.

    At the AVX-512 level, MindSpore 2.10's oneDNN runs 3x3 convolutions in
    plain NCHW with its reference kernel (`ncsp:conv+ref`), about 60x slower
    than the AVX2 gemm kernel on the same layer; a ResNet-50 training step was
    about 8x faster with the cap. CPUs without AVX-512 are unaffected.
    Returns the one-line description that is logged.
    """
    if "mindspore" in sys.modules and "ONEDNN_MAX_CPU_ISA" not in os.environ:
        return "cpu fast path: not applied (mindspore was imported before resnet_ms)"
    if "ONEDNN_MAX_CPU_ISA" in os.environ:
        return f"cpu fast path: ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']} (set by you)"
    if "avx512f" in _cpu_flags():
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
        return "cpu fast path: ONEDNN_MAX_CPU_ISA=AVX2 (AVX-512 CPU; set it yourself to override)"
    return "cpu fast path: not needed (no AVX-512)"


FAST_PATH = apply_cpu_fast_path()


def detect_device():
    """The back-end this MindSpore build was made for: Ascend, GPU or CPU.

    MindSpore's default device target is its build's own; probing with
    `ms.hal.is_available` instead prints library-load errors on CPU builds.
    """
    import mindspore as ms
    return ms.get_context("device_target")


SMALL_MAPS_VAR = "RESNET_MS_SMALL_MAPS"


def small_maps_as_matmul():
    """Whether convolutions on 1x1/2x2 maps run as matrix products (resnet_ms.smallmap).

    The default is yes on CPU, where oneDNN is slow on tiny maps, and no
    elsewhere; RESNET_MS_SMALL_MAPS=matmul or =conv, set by the user, wins.
    Read when a network is built, so set it before building one.
    """
    choice = os.environ.get(SMALL_MAPS_VAR, "auto")
    if choice not in ("auto", "matmul", "conv"):
        raise UserError(f"{SMALL_MAPS_VAR}={choice}: set it to matmul, conv or auto")
    if choice == "auto":
        return detect_device() == "CPU"
    return choice == "matmul"


def describe_small_maps():
    choice = os.environ.get(SMALL_MAPS_VAR)
    how = "matrix products" if small_maps_as_matmul() else "convolutions"
    return f"1x1/2x2 maps: {how} ({f'{SMALL_MAPS_VAR}={choice}, set by you' if choice else 'default'})"


def init_context(device_target="auto", mode="graph", seed=None):
    """Set device and execution mode; returns the device target in use."""
    import mindspore as ms
    target = detect_device() if device_target == "auto" else device_target
    ms.set_device(target)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    if seed is not None:
        ms.set_seed(seed)
    log.info("device %s, %s mode; %s; %s", target, mode, FAST_PATH, describe_small_maps())
    return target
