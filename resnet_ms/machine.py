"""Facts about this machine that decide the CPU paths (read once, from /proc/cpuinfo)."""
import functools


@functools.lru_cache(maxsize=1)
def cpu_info():
    """{'model': CPU model name, 'flags': feature flags} (empty where there is no /proc/cpuinfo)."""
    info = {"model": "", "flags": frozenset()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not info["model"]:
                    info["model"] = value.strip()
                elif key.strip() == "flags" and not info["flags"]:
                    info["flags"] = frozenset(value.split())
    except OSError:
        pass
    return info
