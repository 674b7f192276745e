"""The machine a benchmark ran on, in one line: CPU and its bf16 support, device, versions, date."""

from __future__ import annotations

import datetime as _dt
import os
import platform

from archsearch.training.probe_cache import NATIVE_BF16, cpu_flags

__all__ = ["describe_machine"]


def describe_machine() -> str:
    """CPU model, native bf16 (and the environment variables that limit it), the device, the torch
    and Python versions and the UTC time."""
    import torch  # the command's --help and option errors answer without torch

    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    flags = cpu_flags() or set()
    native = [f for f in NATIVE_BF16 if f in flags]
    bf16 = f"native bf16 ({', '.join(native)})" if native else "no native bf16"
    limits = [f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k)]
    if limits:
        bf16 += f", limited by {' '.join(limits)}"
    return (f"{cpu}, {bf16}; device {dev}; torch {torch.__version__}; python {platform.python_version()}; "
            f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
