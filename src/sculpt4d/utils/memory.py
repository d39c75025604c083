"""Peak memory of one stage: CUDA allocator peak, or the process's resident-set high-water mark on CPU."""

from __future__ import annotations

import ctypes
import resource
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``), so the resident set is live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak measurement; False where the CPU peak cannot be reset (then it is the process's)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    _release_free_heap()
    try:  # Linux >= 4.0: writing 5 resets VmHWM, the peak resident set size, to the current one
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: torch.device) -> float:
    """MiB at the peak since :func:`reset_peak_memory` (CUDA: allocated tensors; CPU: resident set)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB; peak of the process
