"""labeler.label_job.compare: two label partitions written through the pipeline's own row builder, compared."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import cli
from labeler.bundle.info import BundleInfo
from labeler.inference.label_rows import label_rows
from labeler.label_job.compare import compare_versions, resolve_version

QUADRANTS = ("Q1", "Q2", "Q3", "Q4")


def _write_version(output, version: str, probs: np.ndarray, errors: list, mode: str = "4Q", ids=None,
                   success: bool = True) -> None:
    classes = QUADRANTS if mode == "4Q" else ("low", "high")
    info = BundleInfo(uri="/b", model_id="m", model_version=version, mode=mode, classes=classes, branch="audio",
                      featurizer={}, lyrics={}, ambiguous_threshold=0.5)
    n = len(probs)
    batch = {"song_id": np.array(ids or [f"s{i}" for i in range(n)], dtype=object),
             "probs": np.asarray(probs, np.float32), "error": np.array(errors, dtype=object)}
    part = output / f"version={version}"
    part.mkdir(parents=True)
    pq.write_table(label_rows(batch, info, datetime.now(UTC)), part / "part-0.parquet")
    if success:
        (part / "_SUCCESS.json").write_text("{}")


def _onehot(labels: list[int], p: float = 0.7) -> np.ndarray:
    out = np.full((len(labels), 4), (1 - p) / 3)
    out[np.arange(len(labels)), labels] = p
    return out


def test_agreement_transitions_shifts_and_changed_songs(tmp_path):
    old = [0, 0, 1, 1, 2, 3, 3, 3]
    new = [0, 1, 1, 1, 2, 3, 3, 0]
    new_probs = _onehot(new)
    new_probs[6] = [0.05, 0.05, 0.05, 0.85]  # same label, a small shift
    _write_version(tmp_path, "aaaa1111", np.vstack([_onehot(old), _onehot([2])]), [None] * 8 + [None],
                   ids=[f"s{i}" for i in range(9)])
    _write_version(tmp_path, "bbbb2222", np.vstack([new_probs, _onehot([1])]), [None] * 7 + ["corrupt: x", None],
                   ids=[f"s{i}" for i in range(8)] + ["new-song"])
    result, files = compare_versions(str(tmp_path), "aaaa", "bbbb", top=3)
    assert result["songs_in_both"] == 8 and result["labelled_by_both"] == 7
    assert result["only_in_from"] == 1 and result["only_in_to"] == 1 and result["error_only_in_to"] == 1
    assert result["classes"] == list(QUADRANTS)
    matrix = np.array(result["transitions"])
    assert matrix.sum() == 7 and matrix[0, 1] == 1 and matrix[3, 3] == 2
    assert result["label_changes"] == 1 and result["agreement"] == pytest.approx(6 / 7)
    assert -1 <= result["cohen_kappa"] <= 1
    assert result["per_class"]["Q2"]["shift"] == 1 and result["per_class"]["Q1"]["kept_share"] == pytest.approx(0.5)
    # label changes come first, then the largest probability shift
    assert [r["song_id"] for r in result["changed_most"]][:2] == ["s1", "s6"]
    assert result["changed_most"][0]["from"] == "Q1" and result["changed_most"][0]["to"] == "Q2"
    assert result["from"]["ambiguous"] == 0.0
    assert files["markdown"].endswith("aaaa1111_to_bbbb2222/report.md")
    assert json.loads(open(files["json"]).read())["agreement"] == result["agreement"]
    assert "| Q1 | 1 | 1 | 0 | 0 |" in open(files["markdown"]).read()
    assert os.path.getsize(files["png"]) > 5_000


def test_axis_mode_versions_compare_on_their_axis(tmp_path):
    p = np.array([[0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    q = np.array([[0.1, 0.9], [0.3, 0.7], [0.45, 0.55]])
    _write_version(tmp_path, "v1", p, [None] * 3, mode="Ar")
    _write_version(tmp_path, "v2", q, [None] * 3, mode="Ar", success=False)
    result, _ = compare_versions(str(tmp_path), "v1", "v2", report_uri=str(tmp_path / "r"))
    assert result["label_column"] in ("label", "arousal") and result["classes"] == ["high", "low"]  # `label` where filled
    assert result["label_changes"] == 1 and result["to"]["complete"] is False
    assert result["mean_prob_shift"] == pytest.approx(np.mean([0.1, 0.4, 0.05]))


def test_versions_are_resolved_by_unique_prefix(tmp_path):
    for v in ("abc1", "abd2"):
        (tmp_path / f"version={v}").mkdir()
    assert resolve_version(str(tmp_path), "abc") == "abc1"
    with pytest.raises(ValueError, match="matches several versions"):
        resolve_version(str(tmp_path), "ab")
    with pytest.raises(ValueError, match=r"is not a version .*abc1, abd2"):
        resolve_version(str(tmp_path), "zz")


def test_cli_user_errors_are_one_line_and_status_2(tmp_path, capsys):
    _write_version(tmp_path, "v1", _onehot([0, 1]), [None, None])
    assert cli.main(["compare", str(tmp_path), "--from", "v1", "--to", "v9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'v9' is not a version" in err
    assert cli.main(["compare", str(tmp_path), "--from", "v1", "--to", "v1"]) == 2
