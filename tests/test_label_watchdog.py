"""No silent wait (labeler.label_job.watchdog): a run that stops making progress re-plans or fails in bounded time.

The watchdog's clock is injected (no sleeps); the Ray Data guards run on the session's real local Ray with work
no node can take (a custom resource nobody has). The plan's GPU sizing is checked without Ray.
"""

from __future__ import annotations

import itertools

import pytest

from labeler.label_job.config import LabelJobConfig
from labeler.label_job.resources import resolve_resources
from labeler.label_job.resume import exception_chain, infrastructure_failure
from labeler.label_job.watchdog import (
    ClusterChanged,
    ClusterTooSmallError,
    Stalled,
    Watchdog,
    stall_outcome,
    stalled,
    too_small_message,
    watching,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_fires_only_after_the_bound_without_progress():
    clock, counter = Clock(), [0]
    dog = Watchdog(30, progress=lambda: counter[0], clock=clock)
    dog.check()
    for _ in range(5):  # progress every 20 s: never a stall, however long the run
        clock.now += 20
        counter[0] += 1
        dog.check()
    clock.now += 29
    dog.check()  # 29 s without progress: still waiting
    clock.now += 2
    dog.check(extra=7)  # the executor's own counters moved: the clock starts again
    clock.now += 29.9
    dog.check(extra=7)
    clock.now += 0.1
    with pytest.raises(Stalled, match="no progress for 30 s \\(bound: --stall-seconds 30\\)"):
        dog.check(extra=7)
    with pytest.raises(ValueError, match="stall_seconds must be > 0"):
        Watchdog(0)


def test_stall_seconds_is_a_checked_knob():
    assert LabelJobConfig().stall_seconds == 600
    for bad in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="stall_seconds must be a positive number of seconds"):
            LabelJobConfig(stall_seconds=bad)


def test_a_stall_replans_when_the_nodes_changed_else_fails_in_one_line():
    message = lambda: "too small"  # noqa: E731
    changed = stall_outcome({"a", "b"}, {"a", "c"}, can_resume=True, message=message)
    assert isinstance(changed, ClusterChanged) and "1 node(s) gone, 1 new" in str(changed)
    # a resume (label_job.resume) for a node gained as for a node lost
    assert infrastructure_failure(changed, {"a"}, {"a"}) == "ClusterChanged"
    same = stall_outcome({"a", "b"}, {"a", "b"}, can_resume=True, message=message)
    assert isinstance(same, ClusterTooSmallError) and str(same) == "too small"
    assert isinstance(stall_outcome({"a"}, {"b"}, can_resume=False, message=message), ClusterTooSmallError)
    # never resumed, even where a node went away meanwhile: it is the run's answer
    assert infrastructure_failure(same, {"a", "b"}, {"a"}) is None


def test_the_error_names_the_demand_and_the_largest_node():
    gib = 1024**3
    nodes = [{"CPU": 1.0, "memory": 2.0 * gib}, {"CPU": 1.0, "memory": 3.0 * gib, "worker_node": 1.0}]
    demands = {"Predictor actor": {"CPU": 2.0}, "featurise task": {"CPU": 0.25, "memory": 0.5 * gib}}
    line = too_small_message(20, demands, nodes, {"CPU": 0.0})
    assert "\n" not in line
    assert line.startswith("the labelling job made no progress for 20 s: a Predictor actor needs 2 CPU, and no node can take it")
    assert "featurise task" not in line  # it fits: only what cannot be placed is named
    assert "the largest of the 2 alive node(s) has 1 CPU, 3.0 GiB memory (free in the cluster now: none)" in line
    held = too_small_message(20, {"Predictor actor": {"CPU": 1.0, "GPU": 1.0}}, [{"CPU": 4.0, "GPU": 1.0}], {"CPU": 3.0})
    assert "a Predictor actor needs 1 CPU, 1 GPU, and it fits a node's size, but the resources stayed taken" in held
    assert "has 4 CPU, 1 GPU" in held and "free in the cluster now: 3 CPU" in held


def test_stalled_recognises_every_guard():
    class ExecutionTimeoutError(Exception):  # Ray Data's name (ray.data.exceptions), as it arrives
        pass

    assert stalled(Stalled("x"))
    assert stalled(ExecutionTimeoutError("Dataset execution made no progress"))
    assert stalled(TimeoutError("Timed out while starting actors. This may mean ..."))
    wrapped = RuntimeError("plan failed")
    wrapped.__cause__ = Stalled("x")
    assert stalled(wrapped)
    assert not stalled(RuntimeError("ActorDiedError"))


def test_gpu_actors_are_sized_by_the_cpus_a_gpu_node_has_per_gpu():
    """A GPU node smaller than the cluster's CPU count suggests: 60 CPUs elsewhere, but the GPU node has 4 GPUs
    and 1 CPU, so four GPU actors fit only at a quarter CPU each (the totals alone would give each a whole CPU,
    and three of the four would wait for good)."""
    nodes = [{"CPU": 60.0}, {"CPU": 1.0, "GPU": 4.0}]
    gpu = resolve_resources(LabelJobConfig(), {"CPU": 61, "GPU": 4}, nodes=nodes)
    assert (gpu.use_gpu, gpu.max_actors, gpu.actor_cpus) == (True, 4, 0.25)
    assert resolve_resources(LabelJobConfig(), {"CPU": 61, "GPU": 4}).actor_cpus == 1.0  # what the totals gave
    thirds = resolve_resources(LabelJobConfig(), {"CPU": 33, "GPU": 3}, nodes=[{"CPU": 32.0}, {"CPU": 1.0, "GPU": 3.0}])
    assert thirds.actor_cpus == 0.33 and 3 * thirds.actor_cpus <= 1  # rounded down: all three fit
    # two GPU nodes: the actors take the larger per-GPU share, which one of them offers
    two = [{"CPU": 8.0}, {"CPU": 2.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 2.0}]
    assert resolve_resources(LabelJobConfig(), {"CPU": 12, "GPU": 3}, nodes=two).actor_cpus == 1.0


# ---------------------------------------------------------------------------------------- with Ray


def _nowhere(batch):
    return batch


class _NowhereActor:
    def __call__(self, batch):
        return batch


def test_watchdog_ends_a_ray_data_execution_no_node_can_run(ray_local):
    """Tasks that ask for a resource no node has: Ray keeps them pending; the watchdog ends the execution
    (its clock advances one second per look, so the bound passes after a few executor steps)."""
    ds = ray_local.data.range(8, override_num_blocks=2).map_batches(_nowhere, resources={"no_such_node": 1})
    ticks = itertools.count()
    dog = Watchdog(5, clock=lambda: float(next(ticks)))
    with pytest.raises(Exception) as caught, watching(ds, dog):
        ds.take_all()
    assert any(isinstance(link, Stalled) for link in exception_chain(caught.value)), repr(caught.value)
    assert ds.context.execution_no_progress_timeout_s == 5 and ds.context.wait_for_min_actors_s == 5
    assert ray_local.data.DataContext.get_current().wait_for_min_actors_s != 5  # the process's context is untouched


def test_ray_datas_own_bound_on_an_actor_pool_that_cannot_start(ray_local):
    """The Predictor pool's case: its minimum actors never start; Ray Data's wait_for_min_actors_s (1 s here)
    ends the wait with its actor-start timeout, which the driver reads as a stall."""
    ds = ray_local.data.range(4, override_num_blocks=1).map_batches(
        _NowhereActor, compute=ray_local.data.ActorPoolStrategy(min_size=1, max_size=1), resources={"no_such_node": 1})
    with pytest.raises(Exception) as caught, watching(ds, Watchdog(1)):
        ds.take_all()
    assert stalled(caught.value), repr(caught.value)
