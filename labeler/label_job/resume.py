"""When a labelling run's Ray Data plan fails, decide whether the run picks up where it stopped.

Why: committed parts are durable, so a run whose plan died with a node can label what is still
missing without the user re-submitting. Ray retries a task or actor whose process died, but not all of
Ray Data is retried: its Parquet listing actors (FooterReader) are never restarted, and a job
submitted just after a node died can place one on that node before the cluster counts it dead (CI saw
exactly this). Only infrastructure failures are resumed, and only `max_resumes` times: a bug or a bad
input would fail the same way again, so it fails the run at once with its own error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

DEFAULT_RESUMES = 2

# Ray's names for a process, actor, node or object that went away. Ray Data often hands the driver an
# UnserializableException whose message carries the original error's text only, so names are matched
# in the text of the whole exception chain as well as by type.
SYSTEM_FAILURES = (
    "ActorDiedError",
    "ActorUnavailableError",
    "NodeDiedError",
    "WorkerCrashedError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "OwnerDiedError",
    "its node has died",
    "ClusterChanged",  # labeler.label_job.watchdog: a stalled attempt whose nodes changed (re-planned)
)
NOT_RESUMED = ("ClusterTooSmallError",)  # a stalled run on a cluster that did not change: it fails, naming the demand


def exception_chain(exc: BaseException) -> list[BaseException]:
    """exc, then its causes and contexts (each once), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def infrastructure_failure(exc: BaseException, nodes_before: Iterable[str], nodes_now: Iterable[str]) -> str | None:
    """Why `exc` is the cluster's failure rather than the job's, or None when it is not.

    It is when a node alive at the start of the attempt is gone now, or when Ray names a lost
    process, actor, node or object anywhere in the exception chain.
    """
    if type(exc).__name__ in NOT_RESUMED:
        return None
    lost = sorted(set(nodes_before) - set(nodes_now))
    if lost:
        return f"{len(lost)} node(s) lost ({', '.join(node[:8] for node in lost)})"
    for link in exception_chain(exc):
        text = f"{type(link).__name__}: {link}"
        for name in SYSTEM_FAILURES:
            if name in text:
                return name
    return None


def alive_nodes() -> set[str]:
    """Ids of the nodes the cluster counts as alive now (the GCS's view, which lags a dead node by its health checks)."""
    import ray  # noqa: PLC0415

    return {node["NodeID"] for node in ray.nodes() if node.get("Alive")}


def run_with_resumes(attempt: Callable[[int], None], max_resumes: int,
                     nodes: Callable[[], set[str]] = alive_nodes,
                     on_resume: Callable[[int, str, BaseException], None] | None = None) -> int:
    """Call attempt(0), and after each infrastructure failure attempt(1), attempt(2)... up to max_resumes more.

    `attempt` must label only what is still missing when it starts (the driver re-reads the committed
    partition). Any other failure, or one more infrastructure failure than allowed, is raised as is.
    Returns how many times the run resumed.
    """
    for number in range(max_resumes + 1):
        before = nodes()
        try:
            attempt(number)
            return number
        except Exception as exc:  # noqa: BLE001 - classified below; anything else is re-raised unchanged
            reason = infrastructure_failure(exc, before, nodes())
            if reason is None or number == max_resumes:
                raise
            log.warning("the run's plan failed on the cluster (%s): resuming with the songs still to label "
                        "(resume %d of at most %d)", reason, number + 1, max_resumes, exc_info=True)
            if on_resume is not None:
                on_resume(number + 1, reason, exc)
    raise AssertionError("unreachable")
