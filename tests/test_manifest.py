"""The training manifest: union, same-song merge, summary, schema, folds, CLI, local and S3 output."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from jobs.cli import main
from jobs.commands.prepare import parse_sources
from labeler.contracts.schemas import MANIFEST, check_unique_ids, validate
from labeler.io import storage
from train.data.manifest import prepare


def _write_4q(root: Path) -> Path:
    """A 4Q layout with 8 songs (2 a quadrant); MT1 is 'Norah Jones - Moon Song'."""
    root.mkdir(parents=True)
    songs = [(f"MT{i}", f"Q{1 + i % 4}", f"Artist {i}", f"Song {i}") for i in range(8)]
    songs[1] = ("MT1", "Q2", "Norah Jones", "Moon Song")
    pd.DataFrame([s[:2] for s in songs], columns=["Song", "Quadrant"]).to_csv(root / "panda_dataset_taffc_annotations.csv", index=False)
    pd.DataFrame(songs, columns=["Song", "Quadrant", "Artist", "Title"]).to_csv(
        root / "panda_dataset_taffc_metadata.csv", index=False, quoting=1, encoding="iso-8859-1"
    )
    for song, quadrant, *_ in songs:
        (root / quadrant).mkdir(exist_ok=True)
        (root / quadrant / f"{song}.mp3").write_bytes(b"x")
    return root


def _write_generic(path: Path) -> Path:
    """8 lyrics-only songs; g1 is the same song as 4Q's MT1 (spelt differently), with another label."""
    df = pd.DataFrame(
        {
            "id": [f"g{i}" for i in range(8)],
            "artist": [f"Other {i}" for i in range(8)],
            "title": [f"Track {i}" for i in range(8)],
            "text": [f"words {i}" for i in range(8)],
            "q": [f"Q{1 + i % 4}" for i in range(8)],
        }
    )
    df.loc[1, ["artist", "title", "q"]] = ["NORAH JONES feat. Someone", "Moon Song (Live)", "Q4"]
    df.to_csv(path, index=False)
    return path


def test_union_merges_the_same_song(tmp_path):
    fourq = _write_4q(tmp_path / "4q")
    generic = _write_generic(tmp_path / "mine.csv")
    sources = [("4q", str(fourq), {}), ("generic", str(generic), {"song_id": "id", "lyrics": "text", "quadrant": "q"})]
    table, report = prepare(sources, k=3, seed=8848)
    validate(table.schema, MANIFEST)
    check_unique_ids(table)
    assert table.schema.names == MANIFEST.schema.names
    assert table.num_rows == 15  # 8 + 8 - 1 merged
    rows = {r["song_id"]: r for r in table.to_pylist()}
    moon = rows["4q:MT1"]
    assert "generic:g1" not in rows
    assert moon["quadrant"] == 2  # the first dataset's label wins
    assert moon["audio_uri"].endswith("MT1.mp3") and moon["lyrics"] == "words 1"  # lyrics merged in
    assert moon["also_in"] == "generic:g1"
    assert report.duplicates == [{"key": "jones norah|moon song", "kept": "4q:MT1", "merged": "generic:g1", "same_quadrant": False}]
    assert report.label_conflicts == 1
    assert {r["fold"] for r in rows.values()} == {0, 1, 2}
    summary = {(r["dataset"], r["quadrant"]): r for r in report.summary}
    assert summary[("4q", "Q2")] == {"dataset": "4q", "quadrant": "Q2", "rows": 2, "with_audio": 2, "with_lyrics": 1}
    assert summary[("generic", "Q2")]["rows"] == 1  # g1 merged away, g5 left
    text = report.format()
    assert "1 duplicate song(s) merged" in text and "4q:MT1 <- generic:g1" in text and "with_audio" not in text


def test_prepare_errors(tmp_path):
    fourq = _write_4q(tmp_path / "4q")
    with pytest.raises(ValueError, match="unknown dataset 'mer'"):
        prepare([("mer", str(fourq), {})])
    with pytest.raises(ValueError, match="'pmemo' is not among those prepared"):
        prepare([("4q", str(fourq), {})], k=3, cv="PME")
    with pytest.raises(ValueError, match="unknown option 4q.lyric"):
        parse_sources([f"4q={fourq}"], ["4q.lyric=x"])
    with pytest.raises(ValueError, match="expects true or false"):
        parse_sources([f"4q={fourq}"], ["4q.require_inputs=maybe"])
    assert parse_sources([f"4q={fourq}"], ["4q.require_inputs=false"]) == [("4q", str(fourq), {"require_inputs": False})]


@pytest.mark.realdata
def test_real_slices_holdout_pmemo(shared_data):
    sources = [(name, str(shared_data / name), {}) for name in ("4q", "pmemo", "moodylyrics4q")]
    table, report = prepare(sources, k=5, cv="PME", seed=8848)
    validate(table.schema, MANIFEST)
    rows = table.to_pylist()
    assert {r["fold"] for r in rows if r["dataset"] == "pmemo"} == {0}
    assert {r["fold"] for r in rows if r["dataset"] != "pmemo"} == {1, 2, 3, 4}
    assert report.datasets["pmemo"]["rows"] == 4 and report.datasets["4q"]["rows"] == 160
    assert sum(r["rows"] for r in report.summary) == table.num_rows == 160 + 4 + 1354


def test_cli_writes_local_manifest_and_report(tmp_path, capsys):
    fourq = _write_4q(tmp_path / "4q")
    generic = _write_generic(tmp_path / "mine.csv")
    out = tmp_path / "out" / "manifest.parquet"
    code = main([
        "prepare", "--dataset", f"4q={fourq}", "--dataset", f"generic={generic}",
        "--option", "generic.song_id=id", "--option", "generic.lyrics=text", "--option", "generic.quadrant=q",
        "--folds", "3", "--cv", "holdout:generic", "--seed", "7", "--output", str(out), "--report", str(tmp_path / "report.json"),
    ])
    assert code == 0
    table = storage.read_parquet(str(out))
    validate(table.schema, MANIFEST)
    assert table.num_rows == 15
    folds = {r["song_id"]: r["fold"] for r in table.to_pylist()}
    assert folds["4q:MT1"] == 0  # its duplicate is in the held-out dataset
    assert {f for s, f in folds.items() if s.startswith("generic:")} == {0}
    printed = capsys.readouterr().out
    assert "wrote 15 rows" in printed and "generic" in printed
    assert '"label_conflicts": 1' in (tmp_path / "report.json").read_text()


def test_cli_user_error_exit_2(tmp_path, capsys):
    code = main(["prepare", "--dataset", f"deezer={tmp_path}", "--output", str(tmp_path / "m.parquet")])
    assert code == 2
    assert "join table is required" in capsys.readouterr().err


def test_cli_writes_to_s3(tmp_path, s3_bucket):
    fourq = _write_4q(tmp_path / "4q")
    uri = f"{s3_bucket}/manifests/train.parquet"
    assert main(["prepare", "--dataset", f"4q={fourq}", "--folds", "4", "--output", uri]) == 0
    table = storage.read_parquet(uri)
    validate(table.schema, MANIFEST)
    assert table.num_rows == 8 and set(table.column("fold").to_pylist()) == {0, 1, 2, 3}


def test_classes_dataset_folds_by_label_and_cannot_mix_with_quadrants(tmp_path, capsys):
    from train.data.manifest import label_kind

    listing = tmp_path / "moods.csv"
    pd.DataFrame({"id": [f"m{i}" for i in range(15)], "text": [f"words {i}" for i in range(15)],
                  "mood": ["Calm", "Epic", "Dark"] * 5}).to_csv(listing, index=False)
    table, report = prepare([("generic", str(listing), {"song_id": "id", "lyrics": "text", "label": "mood"})], k=5)
    assert label_kind(table) == ("classes", ["Calm", "Dark", "Epic"])
    folds = table.group_by(["fold", "label"]).aggregate([("label", "count")]).to_pylist()
    assert {r["label_count"] for r in folds} == {1}  # stratified on the label: one of each class per fold
    assert "Calm" in report.format() and "Epic" in report.fold_table

    fourq = _write_4q(tmp_path / "4q")
    with pytest.raises(ValueError, match=r"mixes quadrant datasets \(4q\) with classes datasets \(generic\)"):
        prepare([("4q", str(fourq), {}), ("generic", str(listing), {"song_id": "id", "lyrics": "text", "label": "mood"})])
    assert main(["prepare", "--dataset", f"4q={fourq}", "--dataset", f"generic={listing}", "--option", "generic.song_id=id",
                 "--option", "generic.lyrics=text", "--option", "generic.label=mood", "--output", str(tmp_path / "m.parquet")]) == 2
    err = capsys.readouterr().err
    assert "mixes quadrant datasets" in err and "Traceback" not in err
