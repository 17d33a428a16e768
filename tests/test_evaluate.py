"""Scoring, fold summaries and the report (local and S3), checked against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labeler.io import storage
from train.score.metrics import classification_metrics, pooled_per_class, summarise_folds
from train.score.report import write_report
from train.select.calibration import expected_calibration_error

CLASSES = ["Q1", "Q2", "Q3", "Q4"]


def _one_hot(idx, n=4, p=1.0):
    out = np.full((len(idx), n), (1.0 - p) / (n - 1))
    out[np.arange(len(idx)), idx] = p
    return out


def test_perfect_and_all_wrong_predictions():
    y = np.array([0, 1, 2, 3, 0, 1])
    perfect = classification_metrics(y, _one_hot(y), CLASSES)
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0 and perfect["weighted_f1"] == 1.0
    assert perfect["confusion"] == [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert perfect["per_class"]["Q1"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert perfect["n"] == 6 and perfect["ece"] == pytest.approx(0.0)

    wrong = classification_metrics(y, _one_hot((y + 1) % 4), CLASSES)
    assert wrong["accuracy"] == 0.0 and wrong["macro_f1"] == 0.0
    assert wrong["confusion"][0] == [0, 2, 0, 0]  # rows are the true class
    assert wrong["ece"] == pytest.approx(1.0)  # fully confident, always wrong


def test_two_class_case_against_hand_computed_f1():
    # true: 0 0 0 1 1 ; predicted: 0 0 1 1 0
    y_true = [0, 0, 0, 1, 1]
    y_prob = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    m = classification_metrics(y_true, y_prob, ["low", "high"])
    # class 0: TP 2, FP 1, FN 1 -> P 2/3, R 2/3, F1 2/3 ; class 1: TP 1, FP 1, FN 1 -> P R F1 = 1/2
    assert m["confusion"] == [[2, 1], [1, 1]]
    assert m["per_class"]["low"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["high"]["f1"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2) / 5)


def test_class_never_present_scores_zero_not_error():
    m = classification_metrics([0, 0, 1], _one_hot([0, 0, 1]), CLASSES)
    assert m["per_class"]["Q4"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx(0.5)  # zero_division=0: absent classes pull the macro mean down


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="3 columns but there are 4 classes"):
        classification_metrics([0], np.ones((1, 3)) / 3, CLASSES)
    with pytest.raises(ValueError, match="out of range"):
        classification_metrics([5], _one_hot([0]), CLASSES)
    with pytest.raises(ValueError, match="one entry per row"):
        classification_metrics([0, 1], _one_hot([0]), CLASSES)
    with pytest.raises(ValueError, match="empty"):
        classification_metrics([], np.zeros((0, 4)), CLASSES)


def test_ece_calibrated_vs_overconfident():
    rng = np.random.default_rng(0)
    n = 20000
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < conf  # right exactly as often as it claims
    y = np.where(correct, 0, 1)
    probs = np.stack([conf, 1 - conf], axis=1)
    assert expected_calibration_error(probs, y) < 0.02
    # Overconfident: claims 0.99 but is right half the time.
    over = np.tile([0.99, 0.01], (1000, 1))
    assert expected_calibration_error(over, np.tile([0, 1], 500)) == pytest.approx(0.49)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(over, np.zeros(1000, dtype=int), n_bins=0)


def _fold(acc, f1, ece=0.1):
    return {"accuracy": acc, "macro_f1": f1, "weighted_f1": f1, "ece": ece,
            "per_class": {"Q1": {"f1": f1}, "Q2": {"f1": 1 - f1}}}


def test_summarise_folds_mean_and_sample_std():
    s = summarise_folds([_fold(0.5, 0.4), _fold(0.7, 0.6), _fold(0.9, 0.8)])
    assert s["n_folds"] == 3
    assert s["accuracy"]["mean"] == pytest.approx(0.7)
    assert s["accuracy"]["std"] == pytest.approx(0.2)  # ddof=1: sqrt((0.04 + 0 + 0.04) / 2)
    assert s["macro_f1"]["mean"] == pytest.approx(0.6)
    assert s["per_class_f1"]["Q2"]["mean"] == pytest.approx(0.4)
    assert s["ece"] == {"mean": pytest.approx(0.1), "std": pytest.approx(0.0)}
    single = summarise_folds([_fold(0.5, 0.4)])
    assert single["accuracy"] == {"mean": 0.5, "std": None}
    with pytest.raises(ValueError, match="at least one fold"):
        summarise_folds([])


def test_pooled_per_class_from_confusion():
    pooled = pooled_per_class(np.array([[2, 1], [1, 1]]), ["low", "high"])
    assert pooled["low"]["precision"] == pytest.approx(2 / 3)
    assert pooled["high"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}


def _results():
    rng = np.random.default_rng(3)

    def fold_metrics(skill):
        y = rng.integers(0, 4, 40)
        probs = rng.dirichlet(np.ones(4), 40)
        probs[np.arange(40), y] += skill
        return classification_metrics(y, probs / probs.sum(axis=1, keepdims=True), CLASSES)

    curves = {k: {"epoch": [1, 2, 3], "train_loss": [1.3, 1.0, 0.8], "val_macro_f1": [0.3, 0.45, 0.5]} for k in range(3)}
    return {
        "mode": "4Q",
        "classes": CLASSES,
        "branches": {
            "audio": {"folds": {k: fold_metrics(0.5) for k in range(3)}, "curves": curves},
            "fusion": {"folds": {str(k): fold_metrics(1.0) for k in range(3)}},
        },
        "baselines": {"logmel_lr": {"folds": {k: fold_metrics(0.2) for k in range(3)}}},
        "calibration": {"audio": {str(k): {"temperature": 1.3, "ece_before": 0.12, "ece_after": 0.05} for k in range(3)}},
        "provenance": {"manifest": "s3://x/manifest.parquet", "seed": 8848},
    }


EXPECTED_FILES = {"report.json", "report.md", "macro_f1_per_fold.png", "confusion_audio.png",
                  "confusion_fusion.png", "curves_audio.png"}


def test_write_report_locally(tmp_path):
    import matplotlib.image as mpimg

    written = write_report(str(tmp_path / "run"), _results())
    assert set(written) == EXPECTED_FILES
    for name in EXPECTED_FILES:
        assert (tmp_path / "run" / name).stat().st_size > 0
    for png in (n for n in EXPECTED_FILES if n.endswith(".png")):
        image = mpimg.imread(tmp_path / "run" / png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.01  # something was drawn

    report = json.loads((tmp_path / "run" / "report.json").read_text())
    summary = report["branches"]["audio"]["summary"]  # filled in from the folds
    macro = [report["branches"]["audio"]["folds"][k]["macro_f1"] for k in ("0", "1", "2")]
    assert summary["macro_f1"]["mean"] == pytest.approx(np.mean(macro))
    assert summary["macro_f1"]["std"] == pytest.approx(np.std(macro, ddof=1))
    assert report["plots"]["confusion_audio"] == "confusion_audio.png"

    md = (tmp_path / "run" / "report.md").read_text()
    assert "| audio | branch | 3 | " in md and "| logmel_lr | baseline | 3 | " in md
    assert f"{summary['macro_f1']['mean']:.3f} ± {summary['macro_f1']['std']:.3f}" in md
    assert "![audio confusion](confusion_audio.png)" in md
    assert "| audio | 0 | 0.05 | 0.12 | 1.3 |" in md  # calibration table
    # the summed confusion matrix totals every test row once
    total = sum(sum(map(sum, report["branches"]["fusion"]["folds"][k]["confusion"])) for k in ("0", "1", "2"))
    assert total == 120


def test_write_report_to_s3(s3_bucket, tmp_path):
    import matplotlib.image as mpimg

    run = f"{s3_bucket}/runs/r1"
    written = write_report(run, _results())
    assert written["report.md"] == f"{run}/report.md"
    assert {uri.rsplit("/", 1)[1] for uri in storage.listdir(run)} == EXPECTED_FILES
    assert json.loads(storage.read_text(f"{run}/report.json"))["mode"] == "4Q"
    local = tmp_path / "confusion_fusion.png"
    local.write_bytes(storage.read_bytes(f"{run}/confusion_fusion.png"))
    assert mpimg.imread(local).shape[2] in (3, 4)


def test_write_report_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="'branches'"):
        write_report(str(tmp_path), {"mode": "4Q", "classes": CLASSES})
    with pytest.raises(ValueError, match="no 'folds'"):
        write_report(str(tmp_path), {"mode": "4Q", "classes": CLASSES, "branches": {"audio": {"summary": {}}}})


# ---------------------------------------------------------------------------- evaluate_bundle + CLI


def _tiny_bundle(root, mode: str = "4Q") -> str:
    """A fusion bundle: eighth-width Cnn6 on 16 mels and a 2-layer BERT, random weights."""
    import torch

    from labeler.audio import FeaturizerConfig
    from labeler.bundle.store import save_bundle
    from labeler.lyrics.text import LyricsConfig
    from labeler.models import AudioCnnConfig, EmotionModel, LyricsEncoderConfig, ModelConfig
    from tiny_models import tiny_bert_dir

    torch.manual_seed(0)
    bert = tiny_bert_dir(root)
    config = ModelConfig(
        branch="fusion", mode=mode, hidden_dim=16,
        audio=AudioCnnConfig(arch="Cnn6", n_mels=16, width=0.125, embedding_dim=16),
        lyrics=LyricsEncoderConfig(name_or_path=bert),
    )
    model = EmotionModel.from_pretrained_branches(config).eval()
    featurizer = FeaturizerConfig(sample_rate=16000, clip_seconds=2.0, n_mels=16, fmax=8000.0,
                                  min_seconds=0.5, chorus_search_seconds=2.0)
    uri = str(root / f"bundle_{mode}")
    save_bundle(uri, model, featurizer, LyricsConfig(max_tokens=32), tokenizer=bert, model_id="tiny")
    return uri


def _manifest(root) -> tuple[str, list[int]]:
    """10 rows over 2 folds: tones of different pitch, two rows with missing audio (one also without lyrics)."""
    import pyarrow as pa
    import soundfile as sf

    from labeler.contracts.schemas import MANIFEST, conform

    rows = []
    for i in range(10):
        path = root / f"song{i}.wav"
        t = np.arange(int(16000 * 2.5)) / 16000
        sf.write(path, (0.3 * np.sin(2 * np.pi * (200 + 60 * i) * t)).astype(np.float32), 16000)
        quadrant = i % 4 + 1
        rows.append({
            "song_id": f"s{i}", "dataset": "synth", "audio_uri": str(path),
            "lyrics": ["love sunshine dance", "rage fight burn", "tears alone cry", "calm gentle peace"][i % 4],
            "valence": None, "arousal": None, "quadrant": quadrant, "fold": i % 2,
        })
    rows[2]["audio_uri"] = str(root / "missing.wav")  # fold 0: fused model still labels it from lyrics
    rows[4]["audio_uri"] = None                         # fold 0: no audio and no lyrics -> skipped
    rows[4]["lyrics"] = None
    table = conform(pa.Table.from_pylist(rows), MANIFEST)
    uri = str(root / "manifest.parquet")
    storage.write_parquet(table, uri)
    return uri, [r["quadrant"] for r in rows]


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory):
    return tmp_path_factory.mktemp("evaluate_bundle")


@pytest.fixture(scope="module")
def manifest_rows(eval_root):
    return _manifest(eval_root)


@pytest.fixture(scope="module")
def bundle_4q(eval_root):
    return _tiny_bundle(eval_root, mode="4Q")


def test_evaluate_bundle_on_a_fold_and_all_rows(eval_root, manifest_rows, bundle_4q):
    from labeler.contracts.labels import arousal_high
    from train.score.evaluate import evaluate_bundle

    manifest, quadrants = manifest_rows
    bundle = bundle_4q
    fold0 = evaluate_bundle(bundle, manifest, fold=0)
    # fold 0 holds rows 0, 2, 4, 6, 8; row 4 has neither modality.
    assert fold0["n"] == 4 and fold0["skipped"] == 1
    assert set(fold0["skipped_by_kind"]) == {"no_audio"}
    true_counts = np.bincount([quadrants[i] - 1 for i in (0, 2, 6, 8)], minlength=4)
    assert np.asarray(fold0["confusion"]).sum(axis=1).tolist() == true_counts.tolist()
    assert fold0["classes"] == CLASSES and fold0["mode"] == "4Q" and fold0["model_id"] == "tiny"

    # Ar bundle: targets are arousal high/low (Q1, Q2 high), all 10 rows but the empty one.
    everything = evaluate_bundle(_tiny_bundle(eval_root, mode="Ar"), manifest, batch_size=3)
    assert everything["n"] == 9 and everything["classes"] == ["low", "high"]
    high = sum(arousal_high(q) for i, q in enumerate(quadrants) if i != 4)
    assert np.asarray(everything["confusion"]).sum(axis=1).tolist() == [9 - high, high]

    with pytest.raises(ValueError, match="fold 7 is not in the manifest"):
        evaluate_bundle(bundle, manifest, fold=7)


def test_evaluate_cli_json_and_markdown(manifest_rows, bundle_4q, s3_bucket, capsys):
    from jobs.cli import main

    manifest, _ = manifest_rows
    remote_manifest = f"{s3_bucket}/manifests/m.parquet"
    storage.write_bytes(remote_manifest, storage.read_bytes(manifest))
    bundle = bundle_4q

    assert main(["evaluate", "--bundle", bundle, "--manifest", remote_manifest, "--fold", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"accuracy", "macro_f1", "per_class", "confusion", "skipped"} <= set(out)
    assert out["n"] == 5 and out["fold"] == 1 and set(out["per_class"]) == set(CLASSES)

    assert main(["evaluate", "--bundle", bundle, "--manifest", manifest, "--format", "markdown"]) == 0
    text = capsys.readouterr().out
    assert "| accuracy | macro-F1 |" in text and "rows scored: 9" in text and "skipped rows: 1" in text

    assert main(["evaluate", "--bundle", bundle, "--manifest", manifest, "--fold", "9"]) == 2
    assert "fold 9 is not in the manifest" in capsys.readouterr().err
