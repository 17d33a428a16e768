"""Mode `classes` end to end through the CLI: prepare a mirex-layout corpus, train all branches, evaluate
every fold bundle on another manifest of the same classes, label a catalogue with the fusion bundle.

The corpus is made in the test: synthetic songs (the synth package, MP3) written in the MIREX layout with
their quadrant as 'Cluster q', plus songs listed but absent. Real local Ray, real Parquet, real MP3s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import cli
from labeler.bundle.store import read_bundle_config
from labeler.io import storage

pytestmark = pytest.mark.slow

ABSENT = 3  # songs listed in the metadata whose files are not in the copy
TRAIN_SET = ["--set", "clip_seconds=4", "--set", "musicnn_clip_seconds=6", "--set", "epochs=2", "--set", "audio_epoch_factor=2",
             "--set", "max_tokens=48", "--set", "batch_size=8"]


def write_mirex_layout(manifest: pa.Table, root: Path) -> list[dict]:
    """The synthetic songs (manifest rows) as the MIREX dataset lays them out; returns the rows written."""
    rows = manifest.to_pylist()
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
    from synth import SynthConfig, synthesise
    from train.data.datasets.synth import prepare_synth

    root = tmp_path_factory.mktemp("mirex")
    synth = synthesise(SynthConfig(songs=40, output=str(root / "synth"), seconds=5.0, formats=("mp3",), seed=5))
    rows = write_mirex_layout(prepare_synth(synth.output), root / "mirex")
    return {"root": root, "dir": root / "mirex", "rows": rows, "catalogue": synth.catalogue_uri}


def test_prepare_train_evaluate_label(corpus, ray_local, capsys):
    from labeler.bundle.store import read_bundle_config

    root = corpus["root"]
    manifest = str(root / "m.parquet")
    assert cli.main(["prepare", "--dataset", f"mirex={corpus['dir']}", "--folds", "5", "--cv", "ALL",
                     "--output", manifest]) == 0
    table = storage.read_parquet(manifest)
    assert table.num_rows == len(corpus["rows"])  # the listed-but-absent songs are counted, not rows
    assert table.column("quadrant").null_count == table.num_rows
    assert set(table.column("label").to_pylist()) == {"Cluster 1", "Cluster 2", "Cluster 3", "Cluster 4"}
    assert "3 clips listed but absent" in capsys.readouterr().out

    # A larger lyrics corpus with quadrant labels for the lexical model to learn its words from (--lexical-source):
    # 60 made-up songs, each with a word no run song has, so the lyrics bundle's vocabulary shows where it learnt.
    from synth.lyrics import make_lyrics

    rng = np.random.default_rng(11)
    quadrants = [1 + i % 4 for i in range(60)]
    source = str(root / "source.parquet")
    pq.write_table(pa.table({
        "song_id": [f"src:{i}" for i in range(60)], "dataset": ["corpus"] * 60,
        "lyrics": [make_lyrics(rng, q, 0.5, 0.5) + " zyzzyva" for q in quadrants],
        "quadrant": pa.array(quadrants, pa.int8())}), source)

    run = root / "run"
    assert cli.main(["train", "--manifest", manifest, "--branch", "all", "--mode", "classes", "--preset", "cpu-small",
                     "--folds", "0", "--output", str(run), "--lexical-source", source, *TRAIN_SET]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["mode"] == "classes" and report["classes"] == ["Cluster 1", "Cluster 2", "Cluster 3", "Cluster 4"]
    assert {"fusion_head", "fusion_equal", "fusion_average", "fusion_logreg", "fusion_gated"} <= set(report["branches"])
    assert report["provenance"]["lexical_source"]["songs"] == 60
    vocab = json.loads((run / "lyrics" / "fold0" / "bundle" / "lexical" / "vocab.json").read_text())
    assert "zyzzyva" in vocab["terms"][0]  # the word block learnt on the source
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
    fusion_bundle, audio_bundle = str(run / "fusion" / "fold0" / "bundle"), str(run / "audio" / "fold0" / "bundle")
    assert cli.main(["label", "--catalogue", catalogue_uri, "--bundle", fusion_bundle, "--output", str(labels_dir),
                     "--embeddings"]) == 0
    config = read_bundle_config(fusion_bundle)
    part = labels_dir / f"version={config['model_version']}"
    df = pq.read_table(part).to_pandas()
    assert len(df) == 8 and df["error"].isna().all()
    emb = np.stack(df["embedding"].to_numpy())  # what a recommender asks for beyond one label (#21)
    assert emb.shape == (len(df), config["embedding_dim"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    # Whichever fusion won on validation (head, late or gated), its bundle carries the ambiguity threshold.
    assert 0.0 <= config["ambiguous_threshold"] <= 1.0
    assert (df["ambiguous"] == (df["label_prob"] < config["ambiguous_threshold"])).all()
    assert df["quadrant"].isna().all() and df["prob_q1"].isna().all() and df["arousal"].isna().all()
    assert set(df["label"]) <= set(report["classes"])
    first = df.set_index("song_id").loc[catalogue.column("song_id")[0].as_py()]
    assert first["modalities"] == "lyrics"
    for probs, label, p in zip(df["class_probs"], df["label"], df["label_prob"]):
        d = dict(probs)  # pandas: a list of (class, P) tuples
        assert set(d) == set(report["classes"]) and abs(sum(d.values()) - 1) < 1e-4
        assert max(d, key=d.get) == label and d[label] == pytest.approx(p)

    # A roll-out check between two model versions of one output: the audio bundle, then compare.
    assert cli.main(["label", "--catalogue", catalogue_uri, "--bundle", audio_bundle, "--output", str(labels_dir)]) == 0
    capsys.readouterr()
    report_dir = root / "compare"
    assert cli.main(["compare", str(labels_dir), "--from", read_bundle_config(audio_bundle)["model_version"],
                     "--to", config["model_version"], "--report", str(report_dir)]) == 0
    result = json.loads((report_dir / "report.json").read_text())
    assert result["songs_in_both"] == 8 and result["labelled_by_both"] == 7  # the song without audio: fusion only
    assert sum(map(sum, result["transitions"])) == 7 and 0.0 <= result["agreement"] <= 1.0

    import duckdb

    rows = duckdb.sql(f"SELECT song_id, class_probs['Cluster 1'] FROM read_parquet('{part}/*.parquet')").fetchall()
    by_id = {song: dict(p)["Cluster 1"] for song, p in zip(df["song_id"], df["class_probs"])}
    assert len(rows) == 8
    for song, value in rows:
        assert value == pytest.approx(by_id[song])


def copy_slice(source: Path, target: Path, songs: list[str]) -> None:
    """A partial copy of the MIREX slice: all its metadata, the files of `songs` only."""
    (target / "Audio").mkdir(parents=True)
    (target / "Lyrics").mkdir()
    for name in ("clusters.txt", "categories.txt", "dataset info.csv"):
        shutil.copy(source / name, target / name)
    for song in songs:
        shutil.copy(source / "Audio" / f"{song}.mp3", target / "Audio" / f"{song}.mp3")
        shutil.copy(source / "Lyrics" / f"{song}.txt", target / "Lyrics" / f"{song}.txt")


@pytest.mark.realdata
def test_development_slice_end_to_end(shared_data, ray_local, tmp_path, capsys):
    """The same commands on real MIREX songs (4 a cluster train the audio branch, 2 a cluster form the second
    manifest): real MP3 decoding, the MIREX layout, and mood timelines over real clip lengths. Fusion, the
    lexical source, embeddings, the ambiguity threshold and compare are checked on the synthetic corpus above;
    the real-music fusion bundle in test_recipe."""
    source = shared_data / "mirex"
    clusters = (source / "clusters.txt").read_text().splitlines()
    present = sorted(p.stem for p in (source / "Audio").glob("*.mp3"))
    by_cluster: dict[str, list[str]] = {}
    for song in present:
        by_cluster.setdefault(clusters[int(song) - 1], []).append(song)
    train_songs = [s for songs in by_cluster.values() for s in songs[:4]]
    other_songs = [s for songs in by_cluster.values() for s in songs[4:6]]
    copy_slice(source, tmp_path / "a", train_songs)
    copy_slice(source, tmp_path / "b", other_songs)
    manifest, other = str(tmp_path / "m.parquet"), str(tmp_path / "m2.parquet")
    assert cli.main(["prepare", "--dataset", f"mirex={tmp_path / 'a'}", "--folds", "5", "--cv", "ALL", "--output", manifest]) == 0
    assert cli.main(["prepare", "--dataset", f"mirex={tmp_path / 'b'}", "--folds", "3", "--output", other]) == 0
    assert f"{903 - len(train_songs)} clips listed but absent" in capsys.readouterr().out

    run = tmp_path / "run"
    assert cli.main(["train", "--manifest", manifest, "--branch", "audio", "--mode", "classes", "--preset", "cpu-small",
                     "--folds", "0", "--output", str(run), "--set", "epochs=1", "--set", "musicnn_clip_seconds=9"]) == 0
    capsys.readouterr()
    classes = [f"Cluster {c}" for c in range(1, 6)]
    bundle = str(run / "audio" / "fold0" / "bundle")
    assert cli.main(["evaluate", "--bundle", bundle, "--manifest", other, "--format", "json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["classes"] == classes and metrics["n"] == len(other_songs) and "macro_f1" in metrics

    rows = storage.read_parquet(other).select(["song_id", "audio_uri", "lyrics"])
    catalogue = str(tmp_path / "catalogue.parquet")
    pq.write_table(rows, catalogue)
    labels = tmp_path / "labels"
    assert cli.main(["label", "--catalogue", catalogue, "--bundle", bundle, "--output", str(labels),
                     "--timeline", "10"]) == 0
    config = read_bundle_config(bundle)
    df = pq.read_table(labels / f"version={config['model_version']}").to_pandas()
    assert len(df) == len(other_songs) and df["error"].isna().all() and set(df["modalities"]) == {"audio"}
    assert set(df["label"]) <= set(classes) and df["quadrant"].isna().all()
    assert all(abs(sum(dict(p).values()) - 1) < 1e-4 for p in df["class_probs"])
    for timeline in df["timeline"]:  # MIREX clips (26.7-30.05 s) in 10-s windows, the last one up to the end
        windows = list(timeline)
        assert [w["start"] for w in windows] == [0.0, 10.0, 20.0] and 26.0 < windows[-1]["end"] < 30.1
        assert all(w["label"] in classes and 0.2 <= w["label_prob"] <= 1.0 for w in windows)
