"""How many torch threads and DataLoader workers a process uses, chosen from the machine.

Oversubscribed cores make training several times slower: torch's intra-op threads wait
for each other at every small matrix product while another thread (a DataLoader worker,
another job) holds their core. The default therefore gives every process its share of
the usable cores (``sched_getaffinity``), spends them on workers only where a GPU does
the compute, and on a CPU run leaves the data on the training thread (the decode-once
cache is a memory map: reading a batch costs far less than a worker's start-up and
competition). Cores that other jobs keep busy at start (the 1-minute load average) are
not claimed, so contention is not charged to the method. An explicit ``--threads`` /
``--num-workers`` (or ``OMP_NUM_THREADS``, or a caller's ``torch.set_num_threads``, which
the default never exceeds) always wins.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

MAX_GPU_WORKERS = 4  # enough to keep one GPU fed from the memory-mapped cache


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    workers: int
    cores: int  # usable cores on this machine (all processes of the node share them)
    busy: int  # cores other jobs kept busy when the plan was made
    chosen: bool  # True when the machine chose (neither value was given)

    def describe(self) -> str:
        how = "chosen from the machine" if self.chosen else "as given"
        busy = f", {self.busy} busy with other jobs" if self.busy else ""
        return (f"{self.threads} torch thread(s), {self.workers} DataLoader worker(s) per process "
                f"({how}: {self.cores} usable core(s){busy})")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def busy_cores(cores: int) -> int:
    """Cores other jobs keep busy: the 1-minute load average less this process, rounded down."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0
    return max(0, min(cores - 1, int(load - 1.0)))


def plan_threads(
    threads: int | None,
    num_workers: int | None,
    *,
    device_type: str,
    processes: int = 1,
    cores: int | None = None,
    busy: int | None = None,
    current_threads: int | None = None,
) -> ThreadPlan:
    """Threads and workers per process for ``processes`` processes on this node.

    CPU: no workers; threads = the process's share of the cores not busy with other jobs.
    CUDA: up to 4 workers from the process's share, one core kept for the training thread.
    ``current_threads`` (torch's own count: ``OMP_NUM_THREADS`` or an earlier
    ``set_num_threads``) caps a chosen thread count.
    """
    chosen = threads is None or num_workers is None
    cores = usable_cores() if cores is None else cores
    busy = busy_cores(cores) if busy is None else busy
    share = max(1, cores // max(1, processes))
    free_share = max(1, (cores - busy) // max(1, processes))
    if num_workers is None:
        num_workers = 0 if device_type == "cpu" else min(MAX_GPU_WORKERS, share - 1)
    if threads is None:
        threads = max(1, free_share - (num_workers if device_type == "cpu" else 0))
        if device_type != "cpu":
            threads = max(1, min(threads, share - num_workers))
        if current_threads is not None:
            threads = min(threads, current_threads)
    return ThreadPlan(threads=threads, workers=max(0, num_workers), cores=cores, busy=busy, chosen=chosen)


def resolve_threads(threads: int | None, num_workers: int | None, *, device_type: str, processes: int = 1) -> ThreadPlan:
    """:func:`plan_threads` for this process, capped by torch's current thread count."""
    import torch

    return plan_threads(threads, num_workers, device_type=device_type, processes=processes,
                        current_threads=torch.get_num_threads())  # fmt: skip


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op torch threads, then restore the caller's count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def verb_threads(train: dict | None) -> Iterator[ThreadPlan]:
    """A whole verb (its embedding and scoring passes too, not only ``fit``) on the threads its
    ``train`` options ask for, else on the machine's choice; the caller's count is restored."""
    import torch

    train = train or {}
    accelerator = train.get("accelerator") or "auto"
    device_type = ("cuda" if torch.cuda.is_available() else "cpu") if accelerator == "auto" else accelerator
    plan = resolve_threads(train.get("threads"), train.get("num_workers"), device_type=device_type,
                           processes=int(train.get("devices") or 1))  # fmt: skip
    with torch_threads(plan.threads):
        yield plan
