"""CPU threads for a training run: every core on an idle machine, the free ones on a busy one.

On a 2-core laptop with a browser, slides and a video call, torch's default (one thread per core)
makes its threads wait for each other on cores the other programs hold; measured on this project's 2-core machine,
a lab run took 4-12x longer with 2 threads than with 1 while two other jobs ran.
``TrainConfig(threads="auto")`` asks ``pick_threads`` before a run: it samples how busy the
cores are (``/proc/stat`` over a quarter of a second, while this process sleeps, so its own earlier
work does not count) and gives torch the cores that are free, at least one.
"""
from __future__ import annotations

import os
import time
from typing import Optional, Tuple

SAMPLE_S = 0.25


def _cpu_times() -> Optional[Tuple[int, int]]:
    """(busy, total) jiffies of all cores from /proc/stat, or None where it does not exist."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(sample_s: float = SAMPLE_S) -> Optional[float]:
    """How many cores other programs keep busy right now (0.0 .. cores); None off Linux."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(sample_s)
    b = _cpu_times()
    if b is None or b[1] <= a[1]:
        return None
    return (os.cpu_count() or 1) * (b[0] - a[0]) / (b[1] - a[1])


def pick_threads(cores: Optional[int] = None, busy: Optional[float] = None) -> int:
    """The threads a run should use: the cores not kept busy by others, at least 1.

    Args:
        cores: the machine's cores (default ``os.cpu_count()``).
        busy: cores in use by other programs (default: measured by ``busy_cores``); a core
            counts as taken when it is more than half busy.
    """
    cores = cores or os.cpu_count() or 1
    if busy is None:
        busy = busy_cores()
    if busy is None:  # no /proc/stat (macOS, Windows): all cores, as torch would
        return cores
    return max(1, min(cores, cores - int(round(busy))))


def apply_threads(threads) -> Optional[int]:
    """Set torch's intra-op threads for ``TrainConfig.threads``; returns the previous count (None: untouched)."""
    if threads is None:
        return None
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(pick_threads() if threads == "auto" else int(threads))
    return before
