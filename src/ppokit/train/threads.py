"""How many torch threads to use, chosen from the work size and the cores other processes leave free.

Why: on a 2-core machine two intra-op threads sped up large minibatches when the machine was idle,
but with other work on it the same run took 28.3 s against 3.5 s with one thread (docs/benchmarks.md,
issue 17): OpenMP threads spin-wait for a core that another process holds. So ``torch_threads: 0``
(auto) uses one thread unless the minibatch is large enough for a second to pay off AND a second
core is actually free, and looks again while training (``ThreadChooser.update``), dropping to one
thread as soon as other work appears. Free cores are measured, not guessed: the CPU time all
processes used (``/proc/stat``) minus this process's own (``/proc/self/stat``) over the last interval.
"""

from __future__ import annotations

import os
import time

import torch

# Work (minibatch rows x widest hidden layer) from which a second thread paid off on the idle 2-core
# development machine: a minibatch of 1024 through 64-wide layers (docs/benchmarks_presets.md).
TWO_THREADS_FROM = 1024 * 64
CHECK_EVERY_S = 1.0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_seconds() -> tuple[float, float] | None:
    """``(busy CPU seconds of the whole machine, of this process)``, or None where /proc is missing."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            mine = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / hz, (int(mine[11]) + int(mine[12])) / hz  # utime + stime


class ThreadChooser:
    """``requested`` > 0: exactly that many threads, always. 0: auto (see the module docstring)."""

    def __init__(self, requested: int, work: int):
        self.requested, self.work = requested, work
        self.cores = _cores()
        self.threads = requested if requested > 0 else 1
        self.last_check = time.monotonic()
        self.last_cpu = _cpu_seconds()
        torch.set_num_threads(self.threads)

    def wanted(self, others_busy: float) -> int:
        """Threads for ``others_busy`` cores used by other processes."""
        if self.requested > 0:
            return self.requested
        free = self.cores - others_busy
        if self.work < TWO_THREADS_FROM or free < 1.8:
            return 1
        return min(2, self.cores)  # measured: beyond 2 the small matrices gain nothing

    def update(self) -> int:
        """Re-measure at most once a second and set torch's thread count; returns it."""
        now = time.monotonic()
        if self.requested > 0 or now - self.last_check < CHECK_EVERY_S:
            return self.threads
        cpu = _cpu_seconds()
        if cpu is None or self.last_cpu is None:
            return self.threads
        elapsed = now - self.last_check
        others = max(0.0, (cpu[0] - self.last_cpu[0]) - (cpu[1] - self.last_cpu[1])) / elapsed
        self.last_check, self.last_cpu = now, cpu
        threads = self.wanted(others)
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        return threads
