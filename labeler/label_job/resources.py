"""How wide a labelling run goes: the run's knobs completed from the cluster's CPUs and GPUs.

Why a module of its own: the sizes are pure arithmetic on `ray.cluster_resources()`, tested without
Ray, and the reasons for each default (measured in bench/bench_label.py) live beside it.
"""

from __future__ import annotations

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

    def describe(self) -> str:
        """The plan in one line, for the summary: where featurising and the model run, and how wide."""
        device = (f"1 GPU and {self.actor_cpus:g} CPU each (the model runs on CPU inside an actor whose GPU has no CUDA)"
                  if self.use_gpu else f"{self.actor_cpus:g} CPU each")
        return (f"featurise on CPU tasks ({self.featurise_cpus:g} CPU each, {self.featurise_batch_size} songs a batch); "
                f"Predictor on {self.min_actors}-{self.max_actors} actor(s), {device}, {self.predict_batch_size} songs a call")


def resolve_resources(config: LabelJobConfig, cluster: dict[str, float]) -> Resources:
    """Fill unset knobs from `ray.cluster_resources()`.

    With GPUs: one Predictor actor per GPU (the pool grows from one), batches of 64, and one CPU per
    featurise task. CPU only: featurising dominates (decoding and the chorus search cost several
    times a batched CNN + MiniLM pass), so Predictor actors are few (one per 8 CPUs, one CPU each)
    and featurise tasks reserve less than a CPU, so that one task per CPU still fits beside the
    actors, which sit idle most of the time. Featurise batches of 16 songs, predict batches of 32 on
    CPU: on 2 cores with 1,000 30-s songs, 16/32 ran at 11.1 songs/s against 8.7 for 8/16 (per-task
    and per-call overheads), and 32/32 at 11.5 was within noise of it (bench/bench_label.py).
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
    return Resources(
        actor_cpus=actor_cpus,
        featurise_batch_size=config.featurise_batch_size or 16,
        predict_batch_size=config.predict_batch_size or (64 if use_gpu else 32),
        featurise_cpus=featurise_cpus,
        min_actors=min_actors,
        max_actors=max_actors,
        use_gpu=use_gpu,
    )
