"""One serving application's settings: `ServeConfig`, from flags or from `serve run` builder arguments.

The same typed settings arrive two ways (the `labeler serve` flags and `serve run
labeler.serve:app_builder key=value`, whose values are strings) and are checked here before any
replica starts; a bad value raises ValueError naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from labeler.audio.config import check_max_seconds
from labeler.contracts.coerce import coerce, field_types
from labeler.io import storage

_MB = 1024 * 1024


@dataclass(frozen=True)
class ServeConfig:
    """One serving application: the bundle, the scaling and batching knobs, the request limits."""

    bundle: str
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1  # fixed replica count, or the autoscaling minimum when max_replicas is larger
    max_replicas: int | None = None  # > replicas: autoscale between replicas and max_replicas
    max_batch_size: int = 8  # songs per model call (@serve.batch)
    batch_wait_timeout_s: float = 0.05  # how long a model call waits to fill its batch
    max_upload_mb: float = 50.0  # request body limit
    max_json_kb: float = 2048.0  # JSON body limit (JSON names audio by URI; lyrics are capped at 50,000 characters)
    max_audio_seconds: float = 900.0  # longest audio accepted (upload or URI; labeler.audio.check_header, as `labeler label`)
    featurise_threads: int = 2  # featurising threads per replica
    replica_cpus: float = 1.0  # Ray CPUs reserved per replica (also torch's thread count)
    allow_uri_prefixes: tuple[str, ...] = ()  # audio_uri must start with one of these; () = audio_uri refused
    expect_version: str | None = None  # refuse a bundle whose recomputed model_version is not this one
    route_prefix: str = "/"
    embeddings: bool = False  # answer with the `embedding` column too
    timeline_seconds: float | None = None  # answer with the `timeline` column, windows of this many seconds
    tags: bool = False  # answer with the `tags` column (a MusiCNN bundle's 50 tag probabilities)

    def __post_init__(self) -> None:
        if not self.bundle:
            raise ValueError("bundle is required (a model bundle directory, local or s3://)")
        for name in ("replicas", "max_batch_size", "featurise_threads", "port"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "port" else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) < replicas ({self.replicas})")
        for name in ("batch_wait_timeout_s",):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("max_upload_mb", "max_json_kb", "max_audio_seconds", "replica_cpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        check_max_seconds(self.max_audio_seconds)  # finite too: a cap of inf would be none
        if self.timeline_seconds is not None and not (0 < self.timeline_seconds < float("inf")):
            raise ValueError(f"timeline_seconds must be a positive number of seconds, got {self.timeline_seconds!r}")
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {self.route_prefix!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * _MB)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_kb * 1024)

    @classmethod
    def from_mapping(cls, args: dict[str, Any]) -> ServeConfig:
        """From `serve run labeler.serve:app_builder bundle=URI max_batch_size=16 ...` (values may be strings)."""
        hints = field_types(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(args) - set(names))
        if unknown:
            raise ValueError(f"unknown serve argument(s): {', '.join(unknown)}; expected some of {', '.join(names)}")
        values = {name: coerce(f"serve argument {name}", raw, hints[name]) for name, raw in args.items()}
        if values.get("bundle"):  # replicas do not share the caller's working directory
            values["bundle"] = storage.absolute_uri(str(values["bundle"]))
        return cls(**values)

    def deployment_options(self) -> dict[str, Any]:
        """Options for `LabelService.options(...)`: replicas or autoscaling, per-replica concurrency."""
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.replica_cpus},
            # Room for a full batch waiting while the previous one runs (Serve's default is 5).
            "max_ongoing_requests": max(2 * self.max_batch_size, 8),
        }
        if self.max_replicas is not None and self.max_replicas > self.replicas:
            options["autoscaling_config"] = {
                "min_replicas": self.replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.max_batch_size,
            }
        else:
            options["num_replicas"] = self.replicas
        return options
