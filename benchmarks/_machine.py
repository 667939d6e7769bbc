"""What the benchmark scripts print about the machine they ran on."""


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else "unknown CPU"."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"
