"""Process-level settings: the CPU fast paths, device choice, graph mode.

`cpu_kernels.enable` and `apply_cpu_fast_path` must run before MindSpore is
first imported (MindSpore reads MS_OP_PLUGIN_PATH, oneDNN its ISA setting,
once); `resnet_ms/__init__` imports this module first thing.
"""
import concurrent.futures
import contextlib
import logging
import os
import sys
import threading

# MindSpore's C++ warnings go to stderr between our own lines; keep its errors
# only unless the user chose a level (GLOG_v: 0 debug ... 3 error).
os.environ.setdefault("GLOG_v", "3")

from . import cpu_kernels  # noqa: E402
from .errors import UserError  # noqa: E402
from .machine import cpu_info  # noqa: E402

log = logging.getLogger("resnet_ms")


def apply_cpu_fast_path():
    """Cap oneDNN at AVX2 on AVX-512 CPUs for MindSpore's convolutions, unless the user set it.

    At the AVX-512 level, MindSpore 2.10's oneDNN runs 3x3 convolutions in
    plain NCHW with its reference kernel (`ncsp:conv+ref`), about 60x slower
    than the AVX2 gemm kernel on the same layer; a ResNet-50 training step was
    about 8x faster with the cap. resnet_ms's own kernels are the other way
    round (resnet_hour 1.31x faster uncapped, benchmarks/RESULTS.md run 8), so
    with them loaded the cap waits for the first network built on MindSpore's
    convolutions (`onednn_layers`): oneDNN reads the setting at its first
    kernel, not at import. CPUs without AVX-512 are unaffected.
    Returns the one-line description that is logged.
    """
    if "mindspore" in sys.modules and "ONEDNN_MAX_CPU_ISA" not in os.environ:
        return "cpu fast path: not applied (mindspore was imported before resnet_ms)"
    if "ONEDNN_MAX_CPU_ISA" in os.environ:
        return f"cpu fast path: ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']} (set by you)"
    if "avx512f" not in cpu_info()["flags"]:
        return "cpu fast path: not needed (no AVX-512)"
    if cpu_kernels.never_cap():
        return "oneDNN ISA: uncapped (RESNET_MS_KERNELS=onednn), also for MindSpore's convolutions"
    if cpu_kernels.active():
        _isa["deferred"] = True
        return "oneDNN ISA: uncapped for resnet_ms's kernels; AVX2 once a network is built on MindSpore's"
    return _cap_isa()


def _cap_isa():
    _isa["deferred"] = False
    os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    return "cpu fast path: ONEDNN_MAX_CPU_ISA=AVX2 (AVX-512 CPU; set it yourself to override)"


_isa = {"deferred": False}  # the AVX2 cap waits for a network on MindSpore's convolutions
KERNELS = cpu_kernels.enable()
FAST_PATH = apply_cpu_fast_path()
_native_layers = []  # inside native_layers(): networks are built with MindSpore's own ops


@contextlib.contextmanager
def native_layers():
    """Build networks with the standard ops inside this block (export, mixed precision)."""
    _native_layers.append(True)
    try:
        yield
    finally:
        _native_layers.pop()


def onednn_layers():
    """Whether a network built now runs its convolutions and BatchNorm on resnet_ms's
    oneDNN kernels: CPU, graph mode (MindSpore routes ops to plugins only there), kernels
    loaded, not inside native_layers(). When not, a deferred AVX2 cap is set now, before
    MindSpore's first convolution kernel reads it."""
    use = cpu_kernels.active() and not _native_layers
    if use:
        import mindspore as ms
        use = detect_device() == "CPU" and ms.get_context("mode") == ms.GRAPH_MODE
    if not use and _isa["deferred"]:
        log.info("%s: a network on MindSpore's convolutions", _cap_isa())
    return use


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
    if cpu_kernels.active():
        how = f"resnet_ms's kernels ({how} in networks on MindSpore's)"
    return f"1x1/2x2 maps: {how} ({f'{SMALL_MAPS_VAR}={choice}, set by you' if choice else 'default'})"


def init_context(device_target="auto", mode="graph", seed=None):
    """Set device and execution mode; returns the device target in use."""
    import mindspore as ms
    build = detect_device()
    target = build if device_target == "auto" else device_target
    if target not in (build, "CPU"):  # every build also runs on the CPU
        raise UserError(f"--device_target {target}: this MindSpore {ms.__version__} is the {build} build; "
                        f"install MindSpore's {target} build for that device, or pass --device_target {build}")
    if mode == "pynative" and cpu_kernels.active():
        raise UserError(f"--mode pynative: with resnet_ms's CPU kernels loaded, MindSpore {ms.__version__} "
                        "computes eager operations on tensor views wrongly (resnet_ms/cpu_kernels.py); "
                        f"run with {cpu_kernels.VAR}=native, or in graph mode")
    check_kernel_settings()  # also where the kernels are not loaded: a typo is refused the same everywhere
    ms.set_device(target)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    if seed is not None:
        ms.set_seed(seed)
    threads = operator_threads() if target == "CPU" else "operator threads: MindSpore's"
    log.info("device %s, %s mode; %s; %s; %s; %s", target, mode, KERNELS, FAST_PATH, describe_small_maps(), threads)
    return target


OP_THREADS_VAR = "RESNET_MS_OP_THREADS"
MAX_OP_THREADS = 1024  # MindSpore takes any positive number; more than this is a typo
# Read by the kernels' library (csrc/onednn_ops.cc), which would take a typo as 0: their
# pool's size, and how long its threads wait awake for work (a second is a typo too)
KERNEL_SETTINGS = {"RESNET_MS_KERNEL_THREADS": (1, MAX_OP_THREADS), "RESNET_MS_KERNEL_SPIN_US": (0, 1_000_000)}


def _whole_number(var, low, high):
    """The environment variable `var` as set (or ""), refused unless a whole number in low..high."""
    n = os.environ.get(var, "")
    if n and (not n.isdigit() or not low <= int(n) <= high):
        raise UserError(f"{var}={n}: a whole number, {low} to {high}")
    return n


def check_kernel_settings():
    for var, (low, high) in KERNEL_SETTINGS.items():
        _whole_number(var, low, high)


def operator_threads():
    """With resnet_ms's kernels loaded, MindSpore's own CPU operators get one thread (or
    RESNET_MS_OP_THREADS): its pool's threads wait for work by spinning, and took the cores
    from the kernels' own pool, which does the convolutions. One thread: 1.14-1.48x on the
    training step (benchmarks/RESULTS.md run 10). Set once, before any network exists, so a
    network later built on MindSpore's ops (--amp_level O2, export) gets one thread too.
    Returns the line that is logged."""
    import mindspore as ms
    n = _whole_number(OP_THREADS_VAR, 1, MAX_OP_THREADS)
    if not n and not cpu_kernels.active():
        return "operator threads: MindSpore's"
    if not _op_threads:  # MindSpore takes the setting once per process
        try:
            ms.device_context.cpu.op_tuning.threads_num(int(n or 1))
            _op_threads.append(f"operator threads: {int(n or 1)} ({OP_THREADS_VAR}"
                               + (")" if n else "; resnet_ms's kernels have their own)"))
        except RuntimeError:  # the caller set it already
            _op_threads.append("operator threads: as set before init_context")
    return _op_threads[0]


_op_threads = []


def _lowest_priority():
    try:  # Linux: a thread's own niceness (other systems: the process's; then not at all)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


_waiter = []


def fetch(*tensors):
    """The values of MindSpore tensors as NumPy arrays, waited for on a thread of
    lowest priority while the caller sleeps.

    Tensor.asnumpy waits for the running graph by spinning (MindSpore 2.10's runtime
    pipeline, AsyncRQueue::Wait). On this project's 2-core machine that spin took a
    whole core from the two threads that run the training step (top: the waiting
    thread at 100%, the kernels' at 80% and 40%); at niceness 19 it yields to them:
    ResNet-18 b128 1.19-1.28x (benchmarks/RESULTS.md run 11).
    """
    if not _waiter:
        _waiter.append(concurrent.futures.ThreadPoolExecutor(1, "resnet_ms-fetch", _lowest_priority))
    return _waiter[0].submit(lambda: [t.asnumpy() for t in tensors]).result()
