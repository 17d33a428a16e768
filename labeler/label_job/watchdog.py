"""No silent wait: a labelling run that stops making progress re-plans or fails within a bounded time.

Ray keeps a task or actor that no node can take pending for good, and Ray Data waits for it without a
word: a run once sat at `label 0/307` for half an hour behind one Predictor actor that asked for more
CPUs than any node had. Two guards, each bounded by the run's `stall_seconds`, end such a wait:

1. Ray Data's own: `DataContext.wait_for_min_actors_s` makes the Predictor pool's start wait at most
   that long for its minimum actors, then raise GetTimeoutError ('Timed out while starting actors').
   And `DataContext.execution_no_progress_timeout_s` (Ray's default: 30 min) fails the execution with
   ExecutionTimeoutError once no block has moved through any operator's queues for that long.
2. The job's watchdog: a Ray Data execution callback, called at every step of the executor's loop,
   raises `Stalled` once the run's progress counters (songs labelled, parts committed, outputs of every
   operator) have not moved for `stall_seconds`. Ray Data then shuts the execution down and hands the
   error to the driver's iterator. It also covers plans whose operators Ray's guard skips (all-to-all).

The driver (labeler.label_job.driver) turns either into `stall_outcome`: `ClusterChanged` (a resume:
labeler.label_job.resume re-plans for the nodes alive now) when the alive nodes differ from those the
attempt started with, else `ClusterTooSmallError`, one line naming the demand and the largest node
(a ValueError: the CLI prints it and exits with status 2). Committed parts stay; a re-run resumes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

from labeler.label_job.resume import exception_chain

DEFAULT_STALL_SECONDS = 600.0  # room for an autoscaler to add a node, and for a slow actor start (model load)
ACTOR_START_TIMEOUT = "Timed out while starting actors"  # Ray Data's GetTimeoutError text (wait_for_min_actors_s)
GIB = 1024**3


class Stalled(RuntimeError):
    """The run's progress counters did not move for the watchdog's bound (raised inside Ray Data's executor)."""


class ClusterChanged(RuntimeError):
    """A stalled attempt whose cluster changed since it started: resumed with a new plan (its name is a
    SYSTEM_FAILURES entry of labeler.label_job.resume)."""


class ClusterTooSmallError(ValueError):
    """A stalled run whose cluster cannot take what it asks for: one line naming the demand and the largest node."""


@dataclass
class Watchdog:
    """`check()` raises Stalled once `progress()` has returned the same value for `seconds` of `clock()`.

    `progress` returns any comparable snapshot of the run's counters; `check(extra)` adds a value seen by
    the caller (the executor's own output counts). `clock` is injectable: tests advance it by hand.
    """

    seconds: float
    progress: Callable[[], Hashable] = lambda: 0
    clock: Callable[[], float] = time.monotonic
    _last: Hashable = field(default=None, init=False)
    _since: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"stall_seconds must be > 0, got {self.seconds!r}")

    def check(self, extra: Hashable = None) -> None:
        now, value = self.clock(), (self.progress(), extra)
        if self._since is None or value != self._last:
            self._last, self._since = value, now
        elif now - self._since >= self.seconds:
            raise Stalled(f"no progress for {now - self._since:.0f} s (bound: --stall-seconds {self.seconds:g})")


def executor_progress(executor) -> int:
    """Outputs produced so far by every operator of a Ray Data StreamingExecutor (0 where the metric is missing)."""
    try:
        return sum(int(getattr(op.metrics, "num_task_outputs_generated", 0) or 0) for op in executor._topology or ())
    except Exception:  # noqa: BLE001 - a counter the watchdog cannot read is one that does not move
        return 0


class StallCallback:
    """Ray Data execution callback (registered by class: Ray Data builds it with no arguments and ships the
    class by reference inside the dataset's DataContext) that checks the watchdog `watching` made current."""

    def before_execution_starts(self, executor) -> None: ...

    def on_execution_step(self, executor) -> None:
        if _current is not None:
            _current.check(executor_progress(executor))

    def after_execution_succeeds(self, executor) -> None: ...

    def after_execution_fails(self, executor, error: Exception) -> None: ...


_current: Watchdog | None = None


@contextmanager
def watching(ds, watchdog: Watchdog):
    """Iterate `ds` (yielded back) under both guards, each bounded by the watchdog's seconds: Ray Data's own
    (its actor pools start within them, `wait_for_min_actors_s`; its execution fails when nothing moves
    for as long, `execution_no_progress_timeout_s`) and the watchdog, checked at every executor step.
    Sets the dataset's own DataContext (shared by the operators derived from one read), never the
    process's current one. One labelling execution is watched at a time in a process (the driver's)."""
    global _current  # noqa: PLW0603 - Ray Data builds callbacks without arguments: the watchdog is found here
    context = ds.context
    context.wait_for_min_actors_s = max(1, math.ceil(watchdog.seconds))
    context.execution_no_progress_timeout_s = float(watchdog.seconds)
    if StallCallback not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes = [*context.custom_execution_callback_classes, StallCallback]
    _current = watchdog
    try:
        yield ds
    finally:
        _current = None


def stalled(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is the watchdog's Stalled, Ray Data's no-progress timeout
    (ExecutionTimeoutError) or its actor-pool start timeout."""
    return any(isinstance(link, Stalled) or type(link).__name__ in ("Stalled", "ExecutionTimeoutError")
               or ACTOR_START_TIMEOUT in str(link) for link in exception_chain(exc))


def describe_demand(resources: dict[str, float]) -> str:
    parts = [f"{value:g} {name}" for name, value in resources.items() if name not in ("memory",) and value]
    if resources.get("memory"):
        parts.append(f"{resources['memory'] / GIB:.1f} GiB memory")
    return ", ".join(parts) or "none"


def fits(demand: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(name, 0.0) >= value for name, value in demand.items() if value)


def too_small_message(seconds: float, demands: dict[str, dict[str, float]], nodes: Iterable[dict[str, float]],
                      free: dict[str, float]) -> str:
    """One line: what could not be scheduled, the largest node (by CPUs, then GPUs) and what the cluster has free.

    `demands` maps what asks ('Predictor actor', 'featurise task') to its resources ({'CPU': 1, 'GPU': 1,
    'memory': bytes}); `nodes` are the alive nodes' resources; `free` is `ray.available_resources()`.
    """
    nodes = list(nodes)
    largest = max(nodes, key=lambda n: (n.get("CPU", 0.0), n.get("GPU", 0.0), n.get("memory", 0.0)), default={})
    unfit = {name: d for name, d in demands.items() if not any(fits(d, n) for n in nodes)}
    named = unfit or demands
    what = "; ".join(f"a {name} needs {describe_demand(d)}" for name, d in named.items())
    it, fit = ("it", "fits") if len(named) == 1 else ("they", "fit")
    why = (f"no node can take {it}" if unfit else f"{it} {fit} a node's size, but the resources stayed taken (by other work?)")
    pick = {k: largest.get(k, 0.0) for k in ("CPU", "GPU", "memory")}
    have = {k: free.get(k, 0.0) for k in ("CPU", "GPU")}
    return (f"the labelling job made no progress for {seconds:g} s: {what}, and {why}; the largest of the "
            f"{len(nodes)} alive node(s) has {describe_demand(pick)} (free in the cluster now: {describe_demand(have)}). "
            f"Give the cluster a node that fits, lower --max-actors/--featurise-cpus, or raise --stall-seconds; "
            f"committed parts are kept and a re-run resumes")


def stall_outcome(nodes_before: set[str], nodes_now: set[str], can_resume: bool, message: Callable[[], str]) -> Exception:
    """The error a stalled attempt ends with: ClusterChanged (resume, re-plan) when the alive nodes changed and a
    resume is left, else ClusterTooSmallError(message())."""
    if nodes_now != nodes_before and can_resume:
        gone, new = len(nodes_before - nodes_now), len(nodes_now - nodes_before)
        return ClusterChanged(f"stalled, and the cluster changed ({gone} node(s) gone, {new} new): re-planning")
    return ClusterTooSmallError(message())
