"""Process-level tuning for CPU training and inference.

glibc's malloc serves blocks above its mmap threshold (128 KiB at start, adapting upwards to at most
32 MiB) with fresh `mmap` calls and gives them back with `munmap` when freed, and trims the heap top
above 128 KiB. PyTorch's CPU allocator frees every activation after use, so each batch re-maps and
re-faults tens of MB of activations: on EfficientNet-Lite0 at 96 px, batch 256 inference spent more
time in the kernel (page faults) than in the convolutions. Raising the mmap threshold and the trim
threshold keeps those pages in the heap for reuse (benchmarks/allocator.py measures it:
inference 2.4x, training 1.15x images per second on this machine). The cost is that freed memory stays
with the process instead of going back to the OS, bounded by the peak working set it already had.

`HEADSTART_MALLOC_TUNING=0` turns it off; other C libraries (musl, macOS) are left alone.

Validation runs with glibc's defaults and goes the other way: after a phase that made and freed an
object or a buffer per image (the layout's entries, the k-d tree's arrays), `give_back_freed` returns
the free pages inside the heap, so the next phase's peak does not stand on them: at 221,000 images,
validate's peak went 535 -> 502 MiB (benchmarks/data_scale.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import math
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are reused
TRIM_THRESHOLD = (1 << 31) - 1  # do not hand the heap top back to the OS after every batch (c_int max)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (both exist only in glibc)
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def tune_allocator() -> bool:
    """Apply the glibc malloc settings once per process; True when they are in effect."""
    libc = _glibc()
    if libc is None or os.environ.get("HEADSTART_MALLOC_TUNING", "1") == "0":
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.debug("mallopt refused the allocator settings; running with glibc's defaults")
    return ok


def give_back_freed() -> None:
    """Return free pages to the OS: the heap's (glibc's malloc_trim; a no-op on other C libraries) and, when
    pandas' string columns have loaded it, Arrow's memory pool (mimalloc keeps what Arrow freed for reuse)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


def cpu_count(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: its affinity mask, capped by the cgroup CPU quota.

    os.cpu_count() is the node's cores: a pod limited to 4 CPUs on a 96-core node would start 96 decode
    workers and threads that the quota then throttles. cgroup v2 `cpu.max` ("quota period" or "max") and
    v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1: none) give the quota; a fraction rounds up; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, cpus)


def _cgroup_quota(root: str) -> int | None:
    def read(name: str) -> str | None:
        try:
            with open(os.path.join(root, name)) as fh:
                return fh.read().strip()
        except OSError:
            return None

    v2 = read("cpu.max")
    if v2:
        parts = v2.split()
        if parts[0] != "max" and len(parts) == 2 and int(parts[1]) > 0:
            return max(1, math.ceil(int(parts[0]) / int(parts[1])))
        return None
    quota, period = read("cpu/cpu.cfs_quota_us") or read("cpu.cfs_quota_us"), (
        read("cpu/cpu.cfs_period_us") or read("cpu.cfs_period_us"))
    if quota and period and int(quota) > 0 and int(period) > 0:
        return max(1, math.ceil(int(quota) / int(period)))
    return None
