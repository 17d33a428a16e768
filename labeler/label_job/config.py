"""The knobs of one labelling run (`labeler label`'s flags, typed and checked when built)."""

from __future__ import annotations

from dataclasses import dataclass

from labeler.audio.config import MAX_AUDIO_SECONDS, check_max_seconds
from labeler.io.lease import DEFAULT_TTL_SECONDS
from labeler.label_job.resume import DEFAULT_RESUMES
from labeler.label_job.watchdog import DEFAULT_STALL_SECONDS
from labeler.models.configuration import ENGINES
from labeler.runtime.isolate import DEFAULT_RETRIES


@dataclass
class LabelJobConfig:
    """Knobs of one labelling run; None means 'derive from the cluster's resources'."""

    address: str | None = None  # Ray cluster address; None: RAY_ADDRESS, else a local Ray
    featurise_batch_size: int | None = None  # songs per featurise batch (and per input block)
    predict_batch_size: int | None = None  # songs per Predictor call
    featurise_cpus: float | None = None  # CPUs reserved by one featurise task (fractions allowed)
    min_actors: int | None = None  # Predictor actor pool size
    max_actors: int | None = None
    use_gpu: bool | None = None  # None: GPU actors when the cluster has GPUs
    rows_per_part: int = 2048  # rows per committed Parquet part (the resume granularity)
    plot: str | None = None  # PNG of the quadrant distribution and the valence-arousal scatter
    lease_seconds: float = DEFAULT_TTL_SECONDS  # a killed run blocks its output version this long
    embeddings: bool = False  # write the `embedding` column
    timeline_seconds: float | None = None  # write the `timeline` column, windows of this many seconds
    tags: bool = False  # write the `tags` column (a MusiCNN bundle's 50 tag probabilities)
    max_audio_seconds: float = MAX_AUDIO_SECONDS  # a longer track (by its header) is not decoded: audio_error too_long
    expect_version: str | None = None  # refuse a bundle whose model_version is not this one
    max_retries: int = DEFAULT_RETRIES  # retries of a task or actor whose process died (bounded: see build_dataset)
    max_resumes: int = DEFAULT_RESUMES  # times a run whose plan the cluster failed (a lost node) labels the rest itself
    engine: str = "auto"  # the Predictor's CPU engine for frozen encoders: auto, onnxruntime or torch (CUDA: torch)
    stall_seconds: float = DEFAULT_STALL_SECONDS  # no progress this long: re-plan (the nodes changed) or fail (exit 2)

    def __post_init__(self) -> None:
        for name in ("featurise_batch_size", "predict_batch_size", "min_actors", "max_actors", "rows_per_part"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.featurise_cpus is not None and not self.featurise_cpus > 0:
            raise ValueError(f"featurise_cpus must be > 0, got {self.featurise_cpus!r}")
        for name in ("max_retries", "max_resumes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not self.lease_seconds >= 4:
            raise ValueError(f"lease_seconds must be >= 4 (the lease is renewed every quarter of it), got {self.lease_seconds!r}")
        if self.min_actors and self.max_actors and self.min_actors > self.max_actors:
            raise ValueError(f"min_actors ({self.min_actors}) > max_actors ({self.max_actors})")
        if not (0 < self.stall_seconds < float("inf")):
            raise ValueError(f"stall_seconds must be a positive number of seconds, got {self.stall_seconds!r}")
        if self.timeline_seconds is not None and not (0 < self.timeline_seconds < float("inf")):
            raise ValueError(f"timeline_seconds must be a positive number of seconds, got {self.timeline_seconds!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.max_audio_seconds is None:
            raise ValueError("max_audio_seconds must be a positive number of seconds, got None")
        check_max_seconds(self.max_audio_seconds)
