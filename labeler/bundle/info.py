"""What the drivers need from a bundle, read without torch: `BundleInfo`.

Contract: never imports torch. The batch labelling driver (labeler.label_job) and Serve's deployment
(labeler.serve) both plan work from it before any model is loaded, and neither imports the other.
The config is read once, by labeler.bundle.verified.read_config (through
verify_bundle/open_bundle), which checks that `model`, `mode`, `classes` and `model_id` are present;
this module fills no defaults of its own, so the driver sees exactly what the bundle says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labeler.bundle.verified import TokenizerSource, VerifiedBundle, check_version, verify_bundle
from labeler.io import storage


@dataclass(frozen=True)
class BundleInfo:
    """What the driver and the CPU stages need from a bundle's config.json (weights stay unread)."""

    uri: str
    model_id: str
    model_version: str
    mode: str
    classes: tuple[str, ...]
    branch: str
    featurizer: dict
    lyrics: dict
    ambiguous_threshold: float | None = None  # top probability below which a label is flagged ambiguous
    embedding_dim: int | None = None  # length of the `embedding` column
    audio_model: dict = field(default_factory=dict)  # config.json's model.audio (arch, encoder, ...); {} without audio

    @property
    def uses_audio(self) -> bool:
        return self.branch in ("audio", "fusion")

    @property
    def uses_lyrics(self) -> bool:
        return self.branch in ("lyrics", "fusion")

    def tag_names(self) -> tuple[str, ...]:
        """The `tags` column's keys: the MusiCNN encoder's tag names; ValueError for a bundle without one."""
        from labeler.musicnn.tags import bundle_tags  # noqa: PLC0415

        return bundle_tags(self.branch, self.audio_model, f"bundle {storage.describe(self.uri)}")

    @property
    def tokenizer(self) -> TokenizerSource | None:
        """Where featurise tasks and Serve load the verified tokenizer from (None without a lyrics branch)."""
        return TokenizerSource(self.uri, self.model_version) if self.uses_lyrics else None

    @classmethod
    def from_verified(cls, bundle: VerifiedBundle) -> BundleInfo:
        """From the config labeler.bundle.verified.read_config checked: its values as written, no defaults added
        (a branch without audio or lyrics writes null for that section, read here as an empty dict)."""
        config = bundle.config
        return cls(
            uri=bundle.uri,
            model_id=str(config["model_id"]),
            model_version=check_version(bundle.model_version),
            mode=str(config["mode"]),
            classes=tuple(config["classes"]),
            branch=str(config["model"]["branch"]),
            featurizer=dict(config.get("featurizer") or {}),
            lyrics=dict(config.get("lyrics") or {}),
            ambiguous_threshold=config.get("ambiguous_threshold"),
            embedding_dim=config.get("embedding_dim"),
            audio_model=dict(config["model"].get("audio") or {}),
        )


def read_bundle_info(bundle_uri: str, expect_version: str | None = None) -> BundleInfo:
    """The whole bundle verified (every listed file against its sha256, the version recomputed and
    compared with `expect_version`): drivers call this before a lease, a Ray task or a replica."""
    return BundleInfo.from_verified(verify_bundle(storage.absolute_uri(bundle_uri), expect_version))
