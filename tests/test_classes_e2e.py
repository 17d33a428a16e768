"""Mode `classes` end to end through the CLI: prepare a mirex-layout corpus, train all branches, evaluate
every fold bundle on another manifest of the same classes, label a catalogue with the fusion bundle.

The corpus is made in the test: synthetic songs (labeler.synth, MP3) written in the MIREX layout with
their quadrant as 'Cluster q', plus songs listed but absent. Real local Ray, real Parquet, real MP3s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from labeler import cli, storage

pytestmark = pytest.mark.slow

ABSENT = 3  # songs listed in the metadata whose files are not in the copy
TRAIN_SET = ["--set", "clip_seconds=4", "--set", "epochs=2", "--set", "audio_epoch_factor=2",
             "--set", "max_tokens=48", "--set", "batch_size=8"]


def write_mirex_layout(manifest_uri: str, root: Path) -> list[dict]:
    """The synthetic songs as the MIREX dataset lays them out; returns the rows written."""
    rows = storage.read_parquet(manifest_uri).to_pylist()
    (root / "Audio").mkdir(parents=True)
    (root / "Lyrics").mkdir()
    clusters, categories, meta = [], [], ["Title;Artist;Album;Track;Year;Length;Size;Last Modified;Filename;"]
    for i, row in enumerate(rows + [None] * ABSENT, start=1):
        number = f"{i:03d}"
        quadrant = row["quadrant"] if row else 1
        clusters.append(f"Cluster {quadrant}")
        categories.append(["Rousing", "Fiery", "Wistful", "Amiable"][quadrant - 1])
        title = f"Song; number {i}" if i == 2 else f"Song {i}"  # a ';' inside a title, as in the real file
        meta.append(f"{title};Artist {i};Album;1;2001;30;352,00 KB;09-09-2010;{number}.mp3;")
        if row is None:
            continue
        shutil.copy(row["audio_uri"], root / "Audio" / f"{number}.mp3")
        if row["lyrics"]:
            (root / "Lyrics" / f"{number}.txt").write_text(row["lyrics"])
    (root / "clusters.txt").write_text("\n".join(clusters) + "\n")
    (root / "categories.txt").write_text("\n".join(categories) + "\n")
    (root / "dataset info.csv").write_bytes("\r\n".join(meta).encode("utf-16"))
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from labeler.synth import SynthConfig, synthesise

    root = tmp_path_factory.mktemp("mirex")
    synth = synthesise(SynthConfig(songs=60, output=str(root / "synth"), seconds=5.0, formats=("mp3",), seed=5))
    rows = write_mirex_layout(synth.manifest_uri, root / "mirex")
    return {"root": root, "dir": root / "mirex", "rows": rows, "catalogue": synth.catalogue_uri}


def test_prepare_train_evaluate_label(corpus, ray_local, capsys):
    from labeler.bundle import read_bundle_config

    root = corpus["root"]
    manifest = str(root / "m.parquet")
    assert cli.main(["prepare", "--dataset", f"mirex={corpus['dir']}", "--folds", "5", "--cv", "ALL",
                     "--output", manifest]) == 0
    table = storage.read_parquet(manifest)
    assert table.num_rows == len(corpus["rows"])  # the listed-but-absent songs are counted, not rows
    assert table.column("quadrant").null_count == table.num_rows
    assert set(table.column("label").to_pylist()) == {"Cluster 1", "Cluster 2", "Cluster 3", "Cluster 4"}
    assert "3 clips listed but absent" in capsys.readouterr().out

    run = root / "run"
    assert cli.main(["train", "--manifest", manifest, "--branch", "all", "--mode", "classes", "--preset", "cpu-small",
                     "--folds", "0", "--output", str(run), *TRAIN_SET]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["mode"] == "classes" and report["classes"] == ["Cluster 1", "Cluster 2", "Cluster 3", "Cluster 4"]
    assert {"fusion_head", "fusion_average", "fusion_logreg", "fusion_gated"} <= set(report["branches"])
    choice = report["selection"]["fusion"]["0"]["fusion"]
    assert choice["winner"] in choice["val_macro_f1"]

    # Another manifest of the same classes: the generic adapter with a label mapping.
    listing = root / "other.csv"
    listing.write_text("id,path,text,cluster\n" + "".join(
        f"s{i},{r['audio_uri']},\"{(r['lyrics'] or '').replace(chr(34), '')}\",Cluster {r['quadrant']}\n"
        for i, r in enumerate(corpus["rows"][:16])))
    other = str(root / "m2.parquet")
    assert cli.main(["prepare", "--dataset", f"generic={listing}", "--option", "generic.song_id=id",
                     "--option", "generic.audio_uri=path", "--option", "generic.lyrics=text",
                     "--option", "generic.label=cluster", "--folds", "3", "--output", other]) == 0
    capsys.readouterr()
    for branch in ("audio", "lyrics", "fusion"):
        bundle = run / branch / "fold0" / "bundle"
        assert read_bundle_config(str(bundle))["classes"] == report["classes"]
        assert cli.main(["evaluate", "--bundle", str(bundle), "--manifest", other, "--format", "json"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["mode"] == "classes" and 0.0 <= metrics["macro_f1"] <= 1.0 and 0.0 <= metrics["accuracy"] <= 1.0
        assert metrics["n"] + metrics["skipped"] == 16

    # Label a catalogue with the fusion bundle: the new columns, quadrant columns null; one song without audio.
    catalogue = pq.read_table(corpus["catalogue"]).slice(0, 8)
    catalogue = catalogue.set_column(catalogue.column_names.index("audio_uri"), "audio_uri",
                                     [[None] + catalogue.column("audio_uri").to_pylist()[1:]])
    catalogue_uri = str(root / "catalogue.parquet")
    pq.write_table(catalogue, catalogue_uri)
    labels_dir = root / "labels"
    assert cli.main(["label", "--catalogue", catalogue_uri, "--bundle", str(run / "fusion" / "fold0" / "bundle"),
                     "--output", str(labels_dir)]) == 0
    part = next(labels_dir.glob("version=*"))
    df = pq.read_table(part).to_pandas()
    assert len(df) == 8 and df["error"].isna().all()
    assert df["quadrant"].isna().all() and df["prob_q1"].isna().all() and df["arousal"].isna().all()
    assert set(df["label"]) <= set(report["classes"])
    first = df.set_index("song_id").loc[catalogue.column("song_id")[0].as_py()]
    assert first["modalities"] == "lyrics"
    for probs, label, p in zip(df["class_probs"], df["label"], df["label_prob"]):
        d = dict(probs)  # pandas: a list of (class, P) tuples
        assert set(d) == set(report["classes"]) and abs(sum(d.values()) - 1) < 1e-4
        assert max(d, key=d.get) == label and d[label] == pytest.approx(p)

    import duckdb

    rows = duckdb.sql(f"SELECT song_id, class_probs['Cluster 1'] FROM read_parquet('{part}/*.parquet')").fetchall()
    by_id = {song: dict(p)["Cluster 1"] for song, p in zip(df["song_id"], df["class_probs"])}
    assert len(rows) == 8
    for song, value in rows:
        assert value == pytest.approx(by_id[song])
