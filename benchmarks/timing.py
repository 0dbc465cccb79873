"""The one timing rule both benchmark processes (MindSpore's and PyTorch's) use."""
import statistics
import time


def median_seconds(fn, steps, warmup):
    """Median of `steps` timed calls after `warmup` untimed ones.

    Warm-up absorbs graph compilation and allocator growth; the median is
    robust to the odd step slowed by another process on a shared machine.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
