"""A preset, read as the library's typed configs: the featuriser, the lyrics policy and each branch's model.

The training run and the benchmarks build a bundle's configs from a `TrainPreset` here, in one place,
so that what is trained is what the bundle records and what labelling rebuilds; `branch_fields` reads
a fusion run's branch settings back from its branches' bundles. Also the two
strings of `labeler train` that choose what to run: `--folds` and `--search`.
"""

from __future__ import annotations

from train.fit.presets import TrainPreset
from train.fit.trial import SEARCH_KEYS


def featurizer_config(preset: TrainPreset):
    from labeler.audio import FeaturizerConfig  # noqa: PLC0415

    if preset.uses_musicnn:  # musicnn's own fixed front end (the pretrained encoder's input)
        return FeaturizerConfig.musicnn(clip_seconds=preset.musicnn_clip_seconds, descriptors=preset.uses_descriptors)
    return FeaturizerConfig(sample_rate=preset.sample_rate, clip_seconds=preset.clip_seconds,
                            window_size=preset.window_size, hop_size=preset.hop_size, n_mels=preset.n_mels,
                            fmin=preset.fmin, fmax=min(preset.fmax, preset.sample_rate / 2),
                            descriptors=preset.uses_descriptors)


def lyrics_config(preset: TrainPreset):
    from labeler.lyrics.text import LyricsConfig  # noqa: PLC0415

    return LyricsConfig(max_tokens=preset.max_tokens, long_policy=preset.long_policy, max_windows=preset.lyrics_windows,
                        window_overlap=preset.lyrics_window_overlap)


_AUDIO_ARCH = {"Hybrid": "Cnn6", "MusiCNN-Hybrid": "MusiCNN"}  # --model -> AudioCnnConfig.arch (+ descriptors)


def model_config(preset: TrainPreset, branch: str, mode: str, classes: list[str] | None = None) -> dict:
    """ModelConfig (as a dict) of one branch under `preset` (`classes`: mode classes' names)."""
    from labeler.audio import DESCRIPTOR_DIM  # noqa: PLC0415
    from labeler.models import AudioCnnConfig, LyricsEncoderConfig, ModelConfig  # noqa: PLC0415

    featurizer = featurizer_config(preset)
    audio = AudioCnnConfig(
        arch=_AUDIO_ARCH.get(preset.audio_arch, preset.audio_arch), n_mels=featurizer.n_mels,
        width=preset.audio_width, embedding_dim=preset.audio_embedding_dim, dropout=preset.audio_dropout,
        spec_augment=preset.spec_augment, descriptor_dim=DESCRIPTOR_DIM if preset.uses_descriptors else 0,
        time_mask_frames=min(64, max(8, featurizer.n_frames // 8)), encoder=preset.musicnn_encoder,
        tune_top=preset.musicnn_tune_top and preset.uses_musicnn,
    )
    lyrics = LyricsEncoderConfig(name_or_path=preset.lyrics_encoder, dropout=preset.lyrics_dropout,
                                 window_tokens=preset.max_tokens if preset.lyrics_windows > 1 else 0)
    cfg = ModelConfig(branch=branch, mode=mode, audio=audio if branch != "lyrics" else None,
                      lyrics=lyrics if branch != "audio" else None, hidden_dim=preset.hidden_dim,
                      dropout=preset.head_dropout, modality_dropout=preset.modality_dropout,
                      freeze_branches=(preset.freeze_branches and branch == "fusion")
                      or (preset.freeze_lyrics_encoder and branch == "lyrics"), classes=classes)
    return cfg.to_dict()


_ARCH_WITH_DESCRIPTORS = {arch: model for model, arch in _AUDIO_ARCH.items()}  # the inverse: Cnn6 -> Hybrid, ...
_PANNS_GEOMETRY = ("sample_rate", "clip_seconds", "window_size", "hop_size", "n_mels", "fmin", "fmax")


def branch_fields(audio_bundle: dict, lyrics_bundle: dict) -> dict:
    """The TrainPreset fields a fusion run takes from its branches' bundles (their config.json).

    The fused model must see the features and tokens its branches were trained on, and a
    bundle's typed configs (FeaturizerConfig, LyricsConfig, ModelConfig) are what labelling trusts,
    so fusion reads the same thing rather than another run's settings file. This is the inverse of
    `featurizer_config`, `lyrics_config` and `model_config` for the fields those configs record:
    `featurizer_config` and `lyrics_config` of the returned fields give the bundles' configs back.
    """
    from labeler.audio import FeaturizerConfig  # noqa: PLC0415
    from labeler.lyrics.text import LyricsConfig  # noqa: PLC0415
    from labeler.models.configuration import ModelConfig  # noqa: PLC0415

    featurizer = FeaturizerConfig.from_dict(audio_bundle["featurizer"])
    audio = ModelConfig.from_dict(audio_bundle["model"]).audio
    lyrics = LyricsConfig.from_dict(lyrics_bundle["lyrics"])
    encoder = ModelConfig.from_dict(lyrics_bundle["model"]).lyrics
    if audio is None or encoder is None:
        raise ValueError("fusion needs an audio bundle with an audio branch and a lyrics bundle with a lyrics branch")
    if featurizer.descriptors and audio.arch not in _ARCH_WITH_DESCRIPTORS:
        raise ValueError(f"the audio bundle's {audio.arch} branch reads descriptors, which no --model trains")
    arch = _ARCH_WITH_DESCRIPTORS[audio.arch] if featurizer.descriptors else audio.arch
    if featurizer.frontend == "musicnn":  # a fixed geometry; only the clip length is a preset field
        geometry = {"musicnn_clip_seconds": featurizer.clip_seconds}
    else:
        geometry = {name: getattr(featurizer, name) for name in _PANNS_GEOMETRY}
    return {**geometry, "audio_arch": arch, "musicnn_encoder": audio.encoder,
            "musicnn_tune_top": audio.tune_top, "lyrics_encoder": encoder.name_or_path,
            "max_tokens": lyrics.max_tokens, "long_policy": lyrics.long_policy, "lyrics_windows": lyrics.max_windows,
            "lyrics_window_overlap": lyrics.window_overlap}


def parse_folds(value, k: int, preset: TrainPreset) -> list[int]:
    """'all' | '0,2' | [0, 2] | None (= the preset's folds, else all) -> sorted fold ids, checked against k."""
    if value is None:
        folds = list(preset.folds) if preset.folds is not None else list(range(k))
    elif isinstance(value, str):
        folds = list(range(k)) if value.strip().lower() == "all" else [int(v) for v in value.split(",") if v.strip()]
    else:
        folds = [int(v) for v in value]
    bad = [f for f in folds if not 0 <= f < k]
    if bad or not folds:
        raise ValueError(f"folds {bad or value!r} are not in 0..{k - 1} (the manifest has {k} folds)")
    return sorted(set(folds))


def parse_search(spec: str | None) -> dict[str, list]:
    """'lr_scale=0.5,1,2;batch_size=8,16;dropout=0.1,0.3' -> {key: values}; unknown keys raise ValueError."""
    if not spec:
        return {}
    out: dict[str, list] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        key, _, values = part.partition("=")
        key = key.strip()
        if key not in SEARCH_KEYS or not values:
            raise ValueError(f"bad --search item {part!r}: expected KEY=V1,V2 with KEY in {', '.join(SEARCH_KEYS)}")
        cast = int if key == "batch_size" else float
        out[key] = [cast(v) for v in values.split(",")]
    return out
