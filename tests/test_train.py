"""End-to-end training on the synthetic catalogue with real Ray Train/Tune, Parquet and S3 (moto).

The run most tests read is the session's `trained_4q` (tests/conftest.py): 120 five-second songs, 4 folds
of which 2 are trained, cpu-small with the quarter-width Cnn6, fewer epochs and a shorter clip, checkpoints on
S3 and one injected worker failure. The synthetic signal is planted in audio and lyrics (the synth package),
so the floors below are far above chance (0.25 macro-F1 for 4Q) yet below what the noise allows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from labeler.io import storage
from tests.helpers import TRAIN_4Q

pytestmark = pytest.mark.slow

SMALL = TRAIN_4Q


@pytest.fixture(scope="module")
def trained(trained_4q):
    return trained_4q[0]


def test_all_branches_beat_chance_on_test_folds(trained):
    report = trained.report
    assert set(report["branches"]) == {"audio", "lyrics", "fusion", "fusion_head", "fusion_equal", "fusion_average",
                                       "fusion_logreg", "fusion_gated"}
    f1 = {b: np.mean([m["macro_f1"] for m in e["folds"].values()]) for b, e in report["branches"].items()}
    assert sorted(int(f) for f in report["branches"]["fusion"]["folds"]) == [0, 1]
    assert f1["fusion"] >= 0.6, f1
    assert f1["audio"] >= 0.4 and f1["lyrics"] >= 0.5, f1
    # Baselines ran on the same folds, beside the branches.
    assert set(report["baselines"]) == {"audio_logmel_logreg", "lyrics_tfidf_logreg"}
    assert sorted(int(f) for f in report["baselines"]["lyrics_tfidf_logreg"]["folds"]) == [0, 1]


def test_fusion_kept_is_the_best_on_validation_and_scored_like_its_variant(trained):
    from labeler.bundle.store import read_bundle_config
    from train.select import fusion

    for fold, s in trained.report["selection"]["fusion"].items():
        choice = s["fusion"]
        assert choice["winner"] == fusion.simplest_within(choice["val_macro_f1"], choice["tolerance"])
        assert s["val_macro_f1"] == pytest.approx(choice["val_macro_f1"][choice["winner"]])
        variant = trained.report["branches"][f"fusion_{choice['winner']}"]["folds"][fold]
        assert trained.report["branches"]["fusion"]["folds"][fold] == variant
        config = read_bundle_config(trained.fold_bundles["fusion"][int(fold)])
        assert config["model"]["fusion"] == {"head": "head", "gated": "gated"}.get(choice["winner"], "late")


def test_fusion_from_separate_branch_runs_reads_their_settings_from_the_bundles(trained, synth_manifest, tmp_path):
    """`--branch fusion --audio-run --lyrics-run` under a preset whose features, tokens and audio model differ
    from the branches' (plain cpu-small: MusiCNN, 8-s clips, 128 tokens): the fused bundle carries the branch
    bundles' featuriser and lyrics configs (train.fit.configs.branch_fields), not the preset's."""
    from labeler.bundle.store import read_bundle_config
    from train.fit.run import train

    result = train(synth_manifest, str(tmp_path / "fusion"), branch="fusion", preset="cpu-small", folds="0",
                   audio_run=trained.output_uri, lyrics_run=storage.join(trained.output_uri, "lyrics"),
                   cache_uri=storage.join(trained.output_uri, "feature_cache"), epochs=1, batch_size=8)
    fused = read_bundle_config(result.fold_bundles["fusion"][0])
    audio = read_bundle_config(trained.fold_bundles["audio"][0])
    lyrics = read_bundle_config(trained.fold_bundles["lyrics"][0])
    assert fused["featurizer"] == audio["featurizer"] and fused["featurizer"]["clip_seconds"] == SMALL["clip_seconds"]
    assert fused["lyrics"] == lyrics["lyrics"] and fused["lyrics"]["max_tokens"] == SMALL["max_tokens"]
    assert fused["model"]["audio"] == audio["model"]["audio"] and fused["model"]["audio"]["arch"] == "Cnn6"
    assert fused["provenance"]["preset_values"]["audio_arch"] == "Cnn6"
    assert result.report["branches"]["fusion"]["folds"][0]["macro_f1"] > 0.25  # above chance (4 classes)


def test_selection_is_on_validation_and_curves_are_recorded(trained):
    for branch, selection in trained.report["selection"].items():
        for fold, s in selection.items():
            curves = trained.report["branches"][branch]["curves"][fold]
            assert len(curves["val_macro_f1"]) == s["epochs_run"] >= 1
            # fusion: the head's checkpoint score (its finished, stacked score is what the fusion choice compares)
            trained_val = s["head_checkpoint_val_macro_f1"] if branch == "fusion" else s["val_macro_f1"]
            assert trained_val == pytest.approx(max(curves["val_macro_f1"]))
            # the kept checkpoint is the first epoch that reached the best score (a later tie is no gain)
            assert s["best_epoch"] == curves["epoch"][curves["val_macro_f1"].index(max(curves["val_macro_f1"]))]


def test_report_files_and_calibration(trained):
    out = Path(trained.output_uri)
    for name in ("report.json", "report.md", "macro_f1_per_fold.png", "confusion_fusion.png", "curves_fusion.png"):
        assert (out / name).stat().st_size > 1000, name
    report = json.loads((out / "report.json").read_text())
    cal = report["calibration"]["fusion"]
    for fold in ("0", "1"):
        assert 0.05 <= cal[fold]["temperature"] <= 20
        assert cal[fold]["ece_before"] >= 0 and cal[fold]["ece_after"] >= 0


def test_exported_bundle_is_best_validation_fold(trained):
    from labeler.bundle.store import load_bundle, read_bundle_config

    config = read_bundle_config(trained.bundle_uri)
    selection = trained.report["selection"]["fusion"]
    best = max(selection, key=lambda f: selection[f]["val_macro_f1"])
    assert config["provenance"]["exported_fold"] == best
    assert config["provenance"]["preset"] == "cpu-small"
    assert "cv_test_summary" in config["metrics"]
    bundle = load_bundle(trained.bundle_uri)
    assert bundle.model.config.branch == "fusion"
    assert bundle.temperature == pytest.approx(trained.report["calibration"]["fusion"][best]["temperature"])
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in Path(trained.bundle_uri).rglob("*"))
    # cpu-small trains the stacked lyrics branch, and the fused model consumes it (labeler.lyrics.lexical)
    assert bundle.lexical is not None and bundle.lexical.stack_weight is not None
    lyrics = load_bundle(trained.fold_bundles["lyrics"][best])
    assert lyrics.lexical is not None and lyrics.lyrics.max_windows == 8
    assert lyrics.model.config.freeze_branches and lyrics.model.lyrics_encoder.config.window_tokens == 64


def test_worker_failure_resumes_from_checkpoint_on_s3(trained_4q):
    """The shared run's first worker died once at epoch 2 (injected by tests/poison/sitecustomize.py, before the
    epoch's checkpoint); Ray Train restarted it from the last S3 checkpoint and the fold finished, its curve
    unbroken."""
    result, storage_uri = trained_4q
    selection = result.report["selection"]["audio"][0]
    assert selection["resumed_from_epoch"] >= 1
    epochs = result.report["branches"]["audio"]["curves"][0]["epoch"]
    assert epochs == list(range(1, selection["epochs_run"] + 1)) and selection["epochs_run"] >= 2
    assert storage.listdir(storage_uri), "checkpoints were written to S3"
    # the other fold and branches never failed: nothing to resume from
    assert result.report["selection"]["audio"][1]["resumed_from_epoch"] == 0


def test_bad_arguments_raise_value_errors(synth_manifest, tmp_path):
    from train.fit.run import train

    with pytest.raises(ValueError, match="not in 0..3"):
        train(synth_manifest, str(tmp_path), branch="audio", folds="7")
    with pytest.raises(ValueError, match="needs --audio-run"):
        train(synth_manifest, str(tmp_path), branch="fusion")
    with pytest.raises(ValueError, match="unknown preset field"):
        train(synth_manifest, str(tmp_path), branch="audio", no_such_knob=1)


def test_hybrid_audio_branch_trains_exports_descriptor_stats_and_labels(synth_manifest, ray_local, tmp_path):
    """`--model Hybrid` end to end: cache with descriptors, training-part statistics in the bundle, labelling."""
    import pyarrow.parquet as pq

    from labeler.audio import DESCRIPTOR_DIM
    from labeler.bundle.store import read_bundle_config
    from labeler.label_job import LabelJobConfig, label_catalogue
    from train.fit.run import train

    result = train(synth_manifest, str(tmp_path / "out"), branch="audio", preset="cpu-small", folds="0",
                   **{**SMALL, "audio_arch": "Hybrid", "epochs": 3, "audio_epoch_factor": 2.0})
    fold = result.report["branches"]["audio"]["folds"]
    assert next(iter(fold.values()))["macro_f1"] >= 0.4, fold  # chance is 0.25
    config = read_bundle_config(result.bundle_uri)
    assert config["featurizer"]["descriptors"] is True
    stats = config["descriptor_stats"]
    assert len(stats["mean"]) == len(stats["std"]) == DESCRIPTOR_DIM and min(stats["std"]) > 0

    catalogue = str(tmp_path / "catalogue.parquet")
    synth_catalogue = Path(synth_manifest).parent / "synth" / "catalogue.parquet"
    pq.write_table(pq.read_table(synth_catalogue).slice(0, 12), catalogue)
    summary = label_catalogue(catalogue, result.bundle_uri, str(tmp_path / "labels"),
                              LabelJobConfig(featurise_batch_size=4, predict_batch_size=4, max_actors=1))
    assert summary.written == summary.labelled == 12 and not summary.errors
    labels = pq.read_table(summary.partition_uri).to_pandas()
    assert set(labels["modalities"]) == {"audio"}
    probs = labels[["prob_q1", "prob_q2", "prob_q3", "prob_q4"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
