"""oneDNN blocked-layout kernels for convolution, and BatchNorm and max-pool, on the CPU.

MindSpore 2.10's own CPU convolution hands oneDNN plain NCHW tensors, which
leaves it a slow gemm kernel, and its max-pool gradient is slower still.
`csrc/onednn_ops.cc` implements the ops that `mindspore.mint`'s conv2d,
batch_norm and max_pool2d compile to (Conv2DExt, ConvolutionGrad, BatchNormExt,
BatchNormGradExt, MaxPoolWithMask, MaxPoolGradWithMask) and MindSpore's
Convolution (which layers.py calls, its output_padding carrying the one pixel
less that pad_mode='same' puts before at stride 2), the convolutions with
oneDNN's fast kernels (those with a 1x1 output, and the gradients of those with
a 2x2 one, as matrix products), and
the momentum updates of nn.Momentum and engine.DecayedMomentum (ApplyMomentum,
FusedWeightScaleApplyMomentum) on both cores, against the oneDNN that MindSpore
ships; MindSpore loads it as its op plugin (MS_OP_PLUGIN_PATH) and routes those
ops to it by name.

Status (RESNET_MS_KERNELS, read once at import):
  native: not loaded; the default of `import resnet_ms`. MindSpore 2.10's
    eager (PyNative) path, once MS_OP_PLUGIN_PATH is set, offers every eager
    op to the plugin first, and eager ops then read tensor views (a transpose,
    a slice) as if they were contiguous: transpose(a) + 1 came out wrong by up
    to 2.4, and so did the gradient of an eager matmul (tests/test_cpu_kernels.py
    pins this). User code in the same process may be eager, so a library
    import does not load them.
  auto: the default of the project's scripts (train, eval, predict, visualize):
    they run in graph mode and do their eager work in NumPy, and
    `runtime.init_context` refuses --mode pynative while the kernels are
    loaded. Every network runs on them, with oneDNN uncapped (its AVX-512
    blocked kernels; runtime.apply_cpu_fast_path caps it at AVX2 only when a
    network is built on MindSpore's convolutions, for export or mixed precision).
    The small-image ResNets' whole training step matches MindSpore's kernels
    (every gradient to 5e-6, tests/test_cpu_kernels.py). In a whole ResNet-18
    step the two sides differ from layer2.1's first BatchNorm down (up to 3.6e-2
    relative), and a float64 computation of the same step (tests/reference64.py)
    puts ours within 1.2e-3 and MindSpore's 3.6e-2 away: MindSpore's float32
    arithmetic is the far side. Training ran 1.1-1.9x faster on them than on
    MindSpore's under the cap, ResNet-18/50 at batch 64/128 (benchmarks/RESULTS.md run 8).
  onednn: as auto, and oneDNN is never capped (measurement and debugging); a
    kernel build that fails is a warning on stderr.

`enable()` runs once, from `resnet_ms/__init__` before MindSpore is imported
(the plugin path is read when MindSpore first looks for a kernel). It compiles
the library on first use into the cache (a few seconds; reused while the
source, MindSpore, the compiler and the CPU stay the same) and says in one
line which path is in use and why. Anything missing (a compiler, the oneDNN
headers of the `onednn-devel` package, a MindSpore version these kernels were
tested with) leaves MindSpore's own kernels in use.
"""
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import PackageNotFoundError, version

from .files import atomic_path, cache_dir
from .machine import cpu_info

VAR = "RESNET_MS_KERNELS"  # native (a library import's default) | auto (the scripts') | onednn
TESTED_MINDSPORE = ("2.10.0",)  # the op plugin's calling convention is MindSpore's, per version
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "onednn_ops.cc")
LIBRARY = "libresnet_ms_onednn.so"
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-Wl,--no-undefined"]

_state = {"active": False, "why": "not tried"}


def choice():
    return os.environ.get(VAR, "native")


def active():
    """True when the oneDNN kernels are loaded as MindSpore's op plugin in this process."""
    return _state["active"]


def never_cap():
    """True when they are loaded and oneDNN is never to be capped at AVX2, not even for
    MindSpore's own convolutions (RESNET_MS_KERNELS=onednn)."""
    return _state["active"] and choice() == "onednn"


def describe():
    if not _state["active"]:
        return "cpu kernels: MindSpore's own (" + _state["why"] + ")"
    return f"cpu kernels: oneDNN blocked layouts, resnet_ms's ({VAR}={choice()}; =native: MindSpore's) ({_state['why']})"


def _mindspore_dir():
    spec = importlib.util.find_spec("mindspore")
    return list(spec.submodule_search_locations)[0] if spec and spec.submodule_search_locations else None


def _mindspore_version():
    try:
        return version("mindspore")
    except PackageNotFoundError:
        return "unknown"


def _headers():
    """The folder holding oneapi/dnnl/dnnl.hpp (the onednn-devel package installs it beside Python's)."""
    candidates = [os.environ.get("RESNET_MS_ONEDNN_INCLUDE"), os.path.join(sys.prefix, "include"),
                  os.path.join(sysconfig.get_paths()["data"], "include")]
    for folder in filter(None, candidates):
        if os.path.isfile(os.path.join(folder, "oneapi", "dnnl", "dnnl.hpp")):
            return folder
    return None


def _compiler():
    return shutil.which(os.environ.get("CXX", "g++"))


def _cpu_key():
    return " ".join(sorted(cpu_info()["flags"]))  # -march=native: one build per kind of CPU


def library_path(ms_dir, ms_version, compiler):
    with open(SOURCE, "rb") as f:
        source = f.read()
    key = hashlib.sha256(b"\0".join([source, ms_version.encode(), compiler.encode(), " ".join(FLAGS).encode(),
                                     _cpu_key().encode(), ms_dir.encode()])).hexdigest()[:16]
    return os.path.join(cache_dir(), "kernels", key, LIBRARY)


def build(path, ms_dir, include, compiler):
    """Compile the library to `path` (atomically: a failed build leaves nothing)."""
    lib = os.path.join(ms_dir, "lib")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        cmd = [compiler, *FLAGS, f"-I{include}", f"-I{os.path.join(ms_dir, 'include', 'mindspore', 'ops')}", SOURCE, "-o", tmp, os.path.join(lib, "libdnnl.so.3"),
               f"-Wl,-rpath,{lib}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if "error" in line] or proc.stderr.splitlines()
            raise RuntimeError(f"the kernel build failed: {(lines or ['?'])[0][:200]}")
    return path


def _why_not(ms_dir):
    """The reason the kernels cannot be used here, or None."""
    if choice() not in ("auto", "onednn", "native"):
        return f"{VAR}={choice()} is not auto, onednn or native"
    if choice() == "native":
        return f"{VAR}=native: the default of a library import; the scripts set auto"
    if "mindspore" in sys.modules:
        return "mindspore was imported before resnet_ms"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"built for Linux x86-64 only, not {platform.system()} {platform.machine()}"
    if ms_dir is None or not os.path.isfile(os.path.join(ms_dir, "lib", "libdnnl.so.3")):
        return "this MindSpore has no bundled oneDNN (lib/libdnnl.so.3)"
    ms_version = _mindspore_version()
    if ms_version not in TESTED_MINDSPORE:
        return f"MindSpore {ms_version} is untested (tested: {', '.join(TESTED_MINDSPORE)})"
    if os.environ.get("MS_OP_PLUGIN_PATH"):
        return f"MS_OP_PLUGIN_PATH={os.environ['MS_OP_PLUGIN_PATH']} is set by you"
    if _headers() is None:
        return "no oneDNN headers (pip install onednn-devel)"
    if _compiler() is None:
        return "no C++ compiler (g++, or set CXX)"
    return None


def enable():
    """Build (first time) and register the kernels; returns the line that describes the outcome."""
    ms_dir = _mindspore_dir()
    reason = _why_not(ms_dir)
    if reason is None:
        compiler = _compiler()
        path = library_path(ms_dir, _mindspore_version(), compiler)
        try:
            if not os.path.isfile(path):
                build(path, ms_dir, _headers(), compiler)
            os.environ["MS_OP_PLUGIN_PATH"] = path
            _state.update(active=True, why=path)
        except (OSError, RuntimeError) as e:
            reason = str(e)
    if reason is not None:
        _state.update(active=False, why=reason)
        if choice() == "onednn":  # asked for explicitly: say so loudly
            print(f"warning: {VAR}=onednn, but {reason}; MindSpore's own kernels are used", file=sys.stderr)
    return describe()
