"""How many CPUs this process may use, and how many torch threads a piece of work gets.

CPU torch runs its parallel ops on OpenMP (libgomp). When a team's threads do not all get a core
(anything else on the machine uses the CPU: a CI runner, a Kubernetes node, a laptop), every
parallel region waits for the slowest thread, and on small tensors the waits dominate: a tiny
CNN's training loop that takes 1.8 s on 2 threads on a quiet 2-core machine took 31 s on 2 threads
beside two other torch processes, and 7.8 s on 1 thread. On larger images each region does enough
work that 2 threads cost nothing under load and help when the machine is quiet. Neither fix from
the environment is free: ``OMP_WAIT_POLICY=PASSIVE`` doubles the quiet time, and threads chosen
from the current load would make results depend on timing (1 and 2 threads differ in the last
bits). So the thread count is a deterministic function of the image size, the CPUs this process
may use and how many tasks run at once; the pipeline fills the cores with tasks instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

# Values per image (channels x height x width) below which a task runs torch on one thread: the
# digits (64), MNIST (784) and 28x28 RGB stay on one; CIFAR-sized images (3x32x32) and up get more.
SMALL_IMAGE = 3 * 32 * 32

_CGROUP = Path("/sys/fs/cgroup")


def _cgroup_quota() -> float | None:
    """CPUs the cgroup's quota allows (a container's ``--cpus``, a Kubernetes limit), or None."""
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = (_CGROUP / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((_CGROUP / "cpu/cpu.cfs_quota_us").read_text())
        period = int((_CGROUP / "cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may really use: its affinity mask (taskset, a scheduler's CPU set)
    capped by the cgroup's quota. ``os.cpu_count()`` and torch's default count the whole host."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def is_small(values_per_image: int) -> bool:
    return values_per_image < SMALL_IMAGE


def tasks_at_once(values_per_image: int, cpus: int | None = None) -> int:
    """How many scoring tasks should run at once: one per CPU for small images (each on one
    thread), two for larger ones (each with half the CPUs)."""
    cpus = cpus or usable_cpus()
    return cpus if is_small(values_per_image) else min(2, cpus)


def torch_threads(values_per_image: int, at_once: int = 1, cpus: int | None = None) -> int:
    """Torch threads for one task on images of ``values_per_image`` values while ``at_once``
    tasks share the CPUs."""
    if is_small(values_per_image):
        return 1
    return max(1, (cpus or usable_cpus()) // max(1, at_once))


@contextmanager
def use_threads(n: int) -> Iterator[None]:
    """This thread runs torch on ``n`` threads inside the block, and on what it had after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
