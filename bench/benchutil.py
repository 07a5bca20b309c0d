"""Helpers shared by the benchmark scripts: timing, peak memory, and a description of the machine."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def process_peak_mb() -> float:
    """This process's peak resident memory (VmHWM: of this program image only; ``ru_maxrss`` would also count the
    parent's resident set at the fork that started it)."""
    return _proc_status_kb("VmHWM") / 1024


def peak_rss_mb(fn: Callable[[], object]) -> float:
    """Peak resident memory of one call of ``fn`` above the resident set before it (CPU, Linux).

    Meant for a fresh process: one that already ran ``fn`` reuses the allocator's cached pages and hides the
    peak, so the scripts measure it in a subprocess.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set (VmHWM) to the current one (Linux >= 4.0)
    base = _proc_status_kb("VmRSS")
    fn()
    return (_proc_status_kb("VmHWM") - base) / 1024


def cuda_peak_mb(fn: Callable[[], object]) -> float:
    """Peak CUDA memory allocated by one call of ``fn`` above what was allocated before it (after a warm-up)."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def machine(device: str) -> str:
    gpu = f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {device}{gpu}"
    )
