"""What the benchmark scripts print about the machine they ran on."""


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else "unknown CPU"."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


#: glibc's defaults: allocations above 128 KB are mmap'd, and freed heap tops above 256 KB are returned to the OS.
#: Both thresholds then move with the allocation history, so the pages a training step faults in vary with what
#: else a process allocates (``benchmarks/harness_artifacts.py``: 4.8 to 97 minor page faults per MLP step between
#: configurations whose tensor work differs by microseconds). PyTorch's CPU allocator does not cache, so every
#: tensor goes through malloc.
STABLE_MMAP_THRESHOLD = 1 << 26
STABLE_TRIM_THRESHOLD = 1 << 28


def stable_malloc() -> str:
    """Fix glibc's mmap and trim thresholds (64 MB, 256 MB) so that page faults do not depend on history.

    What the CPU performance guides do with jemalloc or tcmalloc, without installing either. Returns a line for
    the benchmark's header; "system malloc" where glibc's ``mallopt`` is not available.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        ok = libc.mallopt(m_mmap_threshold, STABLE_MMAP_THRESHOLD) == 1
        ok = libc.mallopt(m_trim_threshold, STABLE_TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        ok = False
    if not ok:
        return "malloc: system defaults (glibc mallopt not available)"
    return "malloc: glibc, mmap threshold 64 MB, trim threshold 256 MB (fixed by the benchmark; --system-malloc: defaults)"
