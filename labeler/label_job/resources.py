"""How wide a labelling run goes: the run's knobs completed from the cluster's CPUs and GPUs.

Why a module of its own: the sizes are pure arithmetic on `ray.cluster_resources()`, tested without
Ray, and the reasons for each default (measured in bench/bench_label.py) live beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from labeler.label_job.config import LabelJobConfig


@dataclass(frozen=True)
class Resources:
    """The concrete sizes a run uses, after defaults were derived from the cluster."""

    featurise_batch_size: int
    predict_batch_size: int
    featurise_cpus: float
    min_actors: int
    max_actors: int
    use_gpu: bool
    actor_cpus: float = 1.0  # CPUs one Predictor actor reserves (with a GPU: what is left after one featurise task)
    predictor_threads: int | None = None  # torch threads of one CPU Predictor; None: its CPUs (labeler.inference.predict)

    def describe(self) -> str:
        """The plan in one line, for the summary: where featurising and the model run, and how wide."""
        device = (f"1 GPU and {self.actor_cpus:g} CPU each (the model runs on CPU inside an actor whose GPU has no CUDA)"
                  if self.use_gpu else f"{self.actor_cpus:g} CPU each"
                  + (f" ({self.predictor_threads} threads)" if self.predictor_threads else ""))
        return (f"featurise on CPU tasks ({self.featurise_cpus:g} CPU each, {self.featurise_batch_size} songs a batch); "
                f"Predictor on {self.min_actors}-{self.max_actors} actor(s), {device}, {self.predict_batch_size} songs a call")


# Share of a CPU-only cluster given to Predictor actors when the network, not featurising, is the cost. MusiCNN
# (the cpu-small audio model): 0.138 s of network per song against 0.076 s of decoding, chorus search and
# log-mel (30-s songs, bench_label.py --stage-songs 40), so about 3/4 of the CPU time is the Predictor's.
HEAVY_PREDICTOR_SHARE = 0.75
MAX_ACTOR_THREADS = 4  # a bigger share is split over more actors: intra-op threads scale poorly past a few


def largest_nodes(nodes: list[dict[str, float]]) -> tuple[float, float]:
    """(CPUs of the largest node, the most CPUs per GPU of a GPU node) among `nodes` (each alive node's resources,
    as `ray.nodes()` gives them); 0 where there is no such node. Per GPU: a node of 4 GPUs and 2 CPUs hosts four
    GPU actors only if each asks for at most half a CPU."""
    cpu = max((float(n.get("CPU", 0)) for n in nodes), default=0.0)
    gpu_cpu = max((float(n.get("CPU", 0)) / int(n["GPU"]) for n in nodes if n.get("GPU", 0) >= 1), default=0.0)
    return cpu, gpu_cpu


def resolve_resources(config: LabelJobConfig, cluster: dict[str, float], heavy_predictor: bool = False,
                      nodes: list[dict[str, float]] | None = None) -> Resources:
    """Fill unset knobs from `ray.cluster_resources()`, in a plan whose every actor fits one node.

    `nodes` (each alive node's resources; None: one node holding the whole `cluster`): an actor never asks
    for more CPUs than the largest node has (a GPU actor: than a GPU node has per GPU), and a Predictor
    that wants more threads than its node has gets what the node has. Ray would otherwise keep such an
    actor pending for good.

    With GPUs: one Predictor actor per GPU (the pool grows from one), batches of 64, and one CPU per
    featurise task. CPU only, with a light network (Cnn6, lyrics only): featurising dominates (decoding
    and the chorus search cost several times a batched CNN + MiniLM pass), so Predictor actors are few (one per 8 CPUs, one CPU each)
    and featurise tasks reserve less than a CPU, so that one task per CPU still fits beside the
    actors, which sit idle most of the time. Featurise batches of 16 songs, predict batches of 32 on
    CPU: on 2 cores with 1,000 30-s songs, 16/32 ran at 11.1 songs/s against 8.7 for 8/16 (per-task
    and per-call overheads), and 32/32 at 11.5 was within noise of it (bench/bench_label.py).

    `heavy_predictor` (a MusiCNN audio model: labeler.audio.config.uses_musicnn_frontend): on CPU the network costs more than
    featurising, so HEAVY_PREDICTOR_SHARE of the CPUs go to Predictor actors (at most MAX_ACTOR_THREADS
    CPUs each; the Predictor runs as many torch threads as its actor holds) and featurise tasks share the
    rest. On 2 CPUs: one actor of 1 CPU running 2 threads instead of 1.
    """
    cpus = max(1, int(cluster.get("CPU", 1)))
    gpus = int(cluster.get("GPU", 0))
    use_gpu = (gpus > 0) if config.use_gpu is None else config.use_gpu
    if use_gpu and gpus == 0:
        raise ValueError("use_gpu requested but the Ray cluster has no GPU")
    max_default = max(1, gpus) if use_gpu else max(1, cpus // 8)
    max_actors = config.max_actors or max(max_default, config.min_actors or 1)
    min_actors = config.min_actors or 1
    if min_actors > max_actors:
        raise ValueError(f"min_actors ({min_actors}) > max_actors ({max_actors})")
    if config.featurise_cpus is not None:
        featurise_cpus = config.featurise_cpus
    elif use_gpu:
        featurise_cpus = 1.0
    else:
        featurise_cpus = max(0.25, round((cpus - max_actors) / cpus, 2))
    # A GPU actor also reserves CPU (Ray Data's default: 1), and actors hold theirs for the whole run: with
    # as many GPUs as CPUs (a simulated GPU cluster, a small GPU node) they would hold every CPU and the
    # featurise tasks feeding them could never start - the job would hang. Leave one featurise task room.
    actor_cpus = 1.0
    if use_gpu and cpus - max_actors < featurise_cpus:
        actor_cpus = max(0.1, round((cpus - featurise_cpus) / max_actors, 2))
    predictor_threads = None  # None: as many torch threads as the actor holds CPUs (labeler.inference.predict)
    if heavy_predictor and not use_gpu and cpus >= 2 and config.max_actors is None and config.featurise_cpus is None:
        share = HEAVY_PREDICTOR_SHARE * cpus
        max_actors = max(min_actors, math.ceil(share / MAX_ACTOR_THREADS))
        predictor_threads = max(1, round(share / max_actors))
        # The actors hold at most all CPUs but one: Ray Data's own tasks (its ListFiles takes a whole CPU) and
        # the featurise tasks must always find room, or the job waits forever (seen on 2 CPUs with an actor of
        # 1.5). On small clusters the actor so runs more threads than it holds CPUs: its featurise neighbours
        # are a third of the work and mostly idle.
        actor_cpus = round(min(share, cpus - 1) / max_actors, 2)
        featurise_cpus = max(0.25, round((cpus - actor_cpus * max_actors) / cpus, 2))
    node_cpus, gpu_node_cpus = largest_nodes(nodes) if nodes else (float(cpus), cpus / gpus if gpus else 0.0)
    fit = gpu_node_cpus if use_gpu else node_cpus
    if actor_cpus > fit and (use_gpu or fit > 0):  # a GPU node without CPUs still hosts a 0-CPU GPU actor
        actor_cpus = math.floor(fit * 100) / 100  # 1/3 CPU per GPU: 0.33, so that three fit the node
        if predictor_threads is not None:
            predictor_threads = max(1, min(predictor_threads, int(fit)))
    if featurise_cpus > node_cpus > 0:
        raise ValueError(f"featurise tasks of {featurise_cpus:g} CPU fit no node of this cluster (the largest has "
                         f"{node_cpus:g} CPU): lower --featurise-cpus")
    if cpus >= 2 and min_actors * actor_cpus > cpus - 1:
        raise ValueError(f"{min_actors} Predictor actor(s) of {actor_cpus:g} CPU would hold {min_actors * actor_cpus:g} of "
                         f"the cluster's {cpus} CPUs from the start; Ray Data's own tasks need a whole CPU beside them, "
                         f"so the job would wait forever: lower --min-actors (or give the cluster more CPUs)")
    return Resources(
        actor_cpus=actor_cpus,
        predictor_threads=predictor_threads,
        featurise_batch_size=config.featurise_batch_size or 16,
        predict_batch_size=config.predict_batch_size or (64 if use_gpu else 32),
        featurise_cpus=featurise_cpus,
        min_actors=min_actors,
        max_actors=max_actors,
        use_gpu=use_gpu,
    )
