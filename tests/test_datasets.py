"""Dataset adapters: on the real slices (when present) and on small layouts built here, broken ones included."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from labeler.contracts.schemas import MANIFEST, validate
from train.data.datasets.bimodal import prepare_bimodal
from train.data.datasets.common import adapter_stats
from train.data.datasets.deezer import prepare_deezer
from train.data.datasets.fourq import prepare_4q
from train.data.datasets.generic import prepare_generic
from train.data.datasets.moodylyrics4q import prepare_moodylyrics4q
from train.data.datasets.names import normalise_name, song_key
from train.data.datasets.pmemo import prepare_pmemo


def _check_manifest(table: pa.Table, dataset: str) -> list[dict]:
    validate(table.schema, MANIFEST)
    rows = table.to_pylist()
    assert rows, "adapter returned no rows"
    assert {r["dataset"] for r in rows} == {dataset}
    assert all(r["song_id"] == f"{dataset}:{r['source_id']}" for r in rows)
    assert all(r["fold"] == -1 and 1 <= r["quadrant"] <= 4 for r in rows)
    assert all(r["audio_uri"] or r["lyrics"] for r in rows)
    for r in rows:
        if r["audio_uri"]:
            assert Path(r["audio_uri"]).is_absolute() and Path(r["audio_uri"]).is_file()
    return rows


# --------------------------------------------------------------------------- real slices


@pytest.mark.realdata
def test_4q_real_slice(shared_data):
    table = prepare_4q(shared_data / "4q")
    rows = _check_manifest(table, "4q")
    assert len(rows) == 160
    assert pd.Series([r["quadrant"] for r in rows]).value_counts().to_dict() == {1: 40, 2: 40, 3: 40, 4: 40}
    by_id = {r["source_id"]: r for r in rows}
    assert by_id["MT0000203272"]["artist"] == "Jah Mason" and by_id["MT0000203272"]["quadrant"] == 3
    assert by_id["MT0000203272"]["audio_uri"].endswith("Q3/MT0000203272.mp3")
    assert all(r["valence"] is None and r["lyrics"] is None for r in rows)
    assert adapter_stats(table)["with_audio"] == 160


@pytest.mark.realdata
def test_pmemo_real_slice_keeps_songs_with_inputs(shared_data):
    table = prepare_pmemo(shared_data / "pmemo")
    rows = _check_manifest(table, "pmemo")
    assert sorted(r["source_id"] for r in rows) == ["108", "372", "634", "683"]
    annotations = pd.read_csv(shared_data / "pmemo/annotations/static_annotations.csv", dtype={"musicId": str}).set_index("musicId")
    for r in rows:
        assert r["valence"] == pytest.approx(annotations.loc[r["source_id"], "Valence(mean)"] - 0.5)
        assert r["arousal"] == pytest.approx(annotations.loc[r["source_id"], "Arousal(mean)"] - 0.5)
        expected = {(True, True): 1, (True, False): 2, (False, False): 3, (False, True): 4}
        assert r["quadrant"] == expected[(r["arousal"] > 0, r["valence"] > 0)]
        assert r["lyrics"] and r["chorus_start_s"] == 0.0 and r["chorus_end_s"] > 40
    assert {r["artist"] for r in rows} >= {"Calvin Harris", "Michael Bublé"}
    stats = adapter_stats(table)
    assert stats["skipped"]["rows with neither audio nor lyrics (dropped)"] == 763

    everything = prepare_pmemo(shared_data / "pmemo", require_inputs=False)
    assert everything.num_rows == 767


@pytest.mark.realdata
def test_moodylyrics4q_real_slice(shared_data):
    table = prepare_moodylyrics4q(shared_data / "moodylyrics4q")
    rows = _check_manifest(table, "moodylyrics4q")
    stats = adapter_stats(table)
    assert stats["skipped"]["rows without a lyrics file (skipped)"] == 38
    assert len(rows) + sum(stats["skipped"].values()) == 1393
    by_id = {r["source_id"]: r for r in rows}
    sunday = by_id["ML217"]
    assert sunday["quadrant"] == 4 and sunday["artist"] == "Etta James"
    assert "I want a Sunday kind of love" in sunday["lyrics"]  # song.lyrics, not the JSON
    assert all(r["audio_uri"] is None for r in rows)


@pytest.mark.realdata
def test_deezer_real_slice_with_join_table(shared_data, tmp_path):
    songs = pd.read_csv(shared_data / "deezer/test.csv", dtype=str)
    picked = songs.head(6)
    join = pd.DataFrame(
        {
            # three by id, three by artist+title written differently (case, punctuation, feat., suffix)
            "dzr_sng_id": list(picked.dzr_sng_id[:3]) + [None] * 3,
            "artist": list(picked.artist_name[:3]) + [a.upper() for a in picked.artist_name[3:]],
            "title": list(picked.track_name[:3]) + [f"{t}!! (Remastered) feat. Someone" for t in picked.track_name[3:]],
            "lyrics": [f"lyrics of song {i}" for i in range(6)],
        }
    )
    join_path = tmp_path / "join.parquet"
    join.to_parquet(join_path)
    table = prepare_deezer(shared_data / "deezer", join=str(join_path))
    rows = _check_manifest(table, "deezer")
    stats = adapter_stats(table)
    assert stats["matched_by_id"] == 3 and stats["matched_by_title"] >= 3
    assert stats["songs"] == 18644 and stats["match_rate"] == pytest.approx(stats["matched"] / 18644)
    by_id = {r["source_id"]: r for r in rows}
    first = picked.iloc[0]
    assert by_id[first.dzr_sng_id]["valence"] == pytest.approx(float(first.valence))
    assert by_id[picked.iloc[4].dzr_sng_id]["lyrics"] == "lyrics of song 4"


# --------------------------------------------------------------------------- 4Q, built here


def _write_4q(root: Path, annotations: list[tuple[str, str]], clips: list[tuple[str, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(annotations, columns=["Song", "Quadrant"]).to_csv(root / "panda_dataset_taffc_annotations.csv", index=False)
    meta = pd.DataFrame(
        [(s, f"Artíst {s}", f"Title {s}", q) for s, q in annotations], columns=["Song", "Artist", "Title", "Quadrant"]
    )
    meta.to_csv(root / "panda_dataset_taffc_metadata.csv", index=False, quoting=1, encoding="iso-8859-1")
    for song, quadrant in clips:
        (root / quadrant).mkdir(exist_ok=True)
        (root / quadrant / f"{song}.mp3").write_bytes(b"ID3 not really audio")
    return root


def test_4q_counts_listed_but_absent_clips(tmp_path, caplog):
    root = _write_4q(tmp_path / "4q", [("MT1", "Q1"), ("MT2", "Q2"), ("MT3", "Q3")], [("MT1", "Q1"), ("MT3", "Q3")])
    with caplog.at_level(logging.WARNING):
        table = prepare_4q(root)
    rows = _check_manifest(table, "4q")
    assert [r["source_id"] for r in rows] == ["MT1", "MT3"]
    assert rows[0]["artist"] == "Artíst MT1"  # ISO-8859-1 decoded
    skipped = adapter_stats(table)["skipped"]
    assert skipped == {"clips listed but absent": 1, "rows with neither audio nor lyrics (dropped)": 1}
    assert "MT2" in caplog.text


def test_4q_lyrics_folder_and_table(tmp_path):
    root = _write_4q(tmp_path / "4q", [("MT1", "Q1"), ("MT2", "Q2")], [("MT1", "Q1")])
    lyrics_dir = tmp_path / "lyrics"
    lyrics_dir.mkdir()
    (lyrics_dir / "MT2.txt").write_bytes("caf\xe9 song".encode("cp1252"))  # not UTF-8: decoded, not dropped
    rows = prepare_4q(root, lyrics=str(lyrics_dir)).to_pylist()
    assert [r["source_id"] for r in rows] == ["MT1", "MT2"]
    assert rows[1]["audio_uri"] is None and rows[1]["lyrics"] == "café song"

    table_path = tmp_path / "lyrics.csv"
    pd.DataFrame({"song_id": ["MT1"], "lyrics": ["hello"]}).to_csv(table_path, index=False)
    rows = prepare_4q(root, lyrics=str(table_path)).to_pylist()
    assert [(r["source_id"], r["lyrics"]) for r in rows] == [("MT1", "hello")]


def test_4q_quadrant_outside_q1_q4_names_the_row(tmp_path):
    root = _write_4q(tmp_path / "4q", [("MT1", "Q1"), ("MT9", "Q5")], [("MT1", "Q1")])
    with pytest.raises(ValueError, match=r"line 3 \(Song MT9\).*'Q5'"):
        prepare_4q(root)


def test_4q_missing_column_names_file_and_column(tmp_path):
    root = _write_4q(tmp_path / "4q", [("MT1", "Q1")], [("MT1", "Q1")])
    pd.DataFrame({"Song": ["MT1"], "Label": ["Q1"]}).to_csv(root / "panda_dataset_taffc_annotations.csv", index=False)
    with pytest.raises(ValueError, match=r"panda_dataset_taffc_annotations.csv: missing column\(s\) 'Quadrant'"):
        prepare_4q(root)


# --------------------------------------------------------------------------- PMEmo, built here


def test_pmemo_midpoint_is_low_and_missing_files_counted(tmp_path):
    root = tmp_path / "pmemo"
    (root / "annotations").mkdir(parents=True)
    (root / "chorus").mkdir()
    (root / "lyrics").mkdir()
    pd.DataFrame(
        {"musicId": ["1", "2", "3"], "Arousal(mean)": [0.5, 0.9, 0.2], "Valence(mean)": [0.51, 0.5, 0.1]}
    ).to_csv(root / "annotations/static_annotations.csv", index=False)
    pd.DataFrame(
        {"musicId": ["1", "2"], "fileName": ["1.mp3", "2.mp3"], "title": ["A", "B"], "artist": ["X", "Y"],
         "album": ["", ""], "duration": ["50.5", "47"], "chorus_start_time": ["01:00", "00:30"], "chorus_end_time": ["01:50", "01:17"]}
    ).to_csv(root / "metadata.csv", index=False)
    (root / "chorus/1.mp3").write_bytes(b"x")
    (root / "lyrics/2.lrc").write_text("[00:01.00]hello\n")
    table = prepare_pmemo(root)
    rows = {r["source_id"]: r for r in _check_manifest(table, "pmemo")}
    assert set(rows) == {"1", "2"}
    assert rows["1"]["quadrant"] == 4  # arousal exactly 0.5 is low, valence 0.51 high
    assert rows["2"]["quadrant"] == 2  # valence exactly 0.5 is low
    assert rows["1"]["chorus_end_s"] == 50.5 and rows["2"]["chorus_start_s"] is None  # no clip, no chorus window
    assert rows["2"]["lyrics"].startswith("[00:01.00]")  # raw: cleaning happens at tokenisation
    skipped = adapter_stats(table)["skipped"]
    assert skipped["clips listed in metadata.csv but absent"] == 1
    assert skipped["rows with neither audio nor lyrics (dropped)"] == 1


def test_pmemo_missing_column(tmp_path):
    (tmp_path / "annotations").mkdir()
    pd.DataFrame({"musicId": ["1"], "Arousal(mean)": [0.4]}).to_csv(tmp_path / "annotations/static_annotations.csv", index=False)
    with pytest.raises(ValueError, match=r"static_annotations.csv: missing column\(s\) 'Valence\(mean\)'"):
        prepare_pmemo(tmp_path)


# --------------------------------------------------------------------------- MER Bi-modal, built here


def _bimodal_rows(quadrant_of_second: str = "Q2") -> list[list[object]]:
    preamble = [["MER Bi-modal dataset"], ["Malheiro et al. 2016"], [], ["Some note", "", ""]]
    return preamble + [
        ["Song Code", "Lyrics Code", "Quadrant", "Artist", "Title"],
        ["A001", "L001", "Q1", "Norah Jones", "Moon Song"],
        ["A002", "L002", quadrant_of_second, "Frank Sinatra", "New York, New York"],
        ["A003", "L003", "Q3", "Enya", "Paint the Sky with Stars"],
        [],
    ]


def _bimodal_files(root: Path) -> None:
    (root / "Audio" / "Q1").mkdir(parents=True)
    (root / "Lyrics").mkdir()
    (root / "Audio/Q1/A001.mp3").write_bytes(b"x")
    (root / "Audio/Q1/A002 - New York.mp3").write_bytes(b"x")
    (root / "Lyrics/L001.txt").write_text("Want to find out where the moon goes")
    (root / "Lyrics/L003.txt").write_text("Suddenly before my eyes")


def _write_rows(path: Path, rows: list[list[object]]) -> None:
    width = max(len(r) for r in rows)
    rows = [list(r) + [""] * (width - len(r)) for r in rows]
    if path.suffix == ".xlsx":
        pd.DataFrame(rows).to_excel(path, header=False, index=False)
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, header=False, index=False)
    else:
        xlwt = pytest.importorskip("xlwt")
        book = xlwt.Workbook()
        sheet = book.add_sheet("data")
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                sheet.write(i, j, value)
        book.save(str(path))


@pytest.mark.parametrize("suffix", [".xls", ".xlsx", ".csv"])
def test_bimodal_finds_header_below_preamble(tmp_path, suffix):
    _bimodal_files(tmp_path)
    _write_rows(tmp_path / f"MER-Bimodal-Dataset{suffix}", _bimodal_rows())
    table = prepare_bimodal(tmp_path)
    rows = {r["source_id"]: r for r in _check_manifest(table, "bimodal")}
    assert [rows[c]["quadrant"] for c in ("A001", "A002", "A003")] == [1, 2, 3]
    assert rows["A001"]["lyrics"].startswith("Want to find") and rows["A001"]["audio_uri"].endswith("A001.mp3")
    assert rows["A002"]["audio_uri"].endswith("A002 - New York.mp3") and rows["A002"]["lyrics"] is None
    assert rows["A003"]["audio_uri"] is None and rows["A002"]["title"] == "New York, New York"
    skipped = adapter_stats(table)["skipped"]
    assert skipped == {"songs listed whose audio clip is absent": 1, "songs listed whose lyrics file is absent or empty": 1}


def test_bimodal_names_from_lyrics_sheet(tmp_path):
    _bimodal_files(tmp_path)
    rows = [r[:3] for r in _bimodal_rows()]  # no Artist/Title in the song sheet
    _write_rows(tmp_path / "MER-Bimodal-Dataset.xlsx", rows)
    lyrics_rows = [["lyrics sheet"], [], ["Code", "Artist", "Title", "Quadrant"], ["L001", "Norah Jones", "Moon Song", "Q1"]]
    _write_rows(tmp_path / "MER_lyrics_dataset.csv", lyrics_rows)
    by_id = {r["source_id"]: r for r in prepare_bimodal(tmp_path).to_pylist()}
    assert (by_id["A001"]["artist"], by_id["A001"]["title"]) == ("Norah Jones", "Moon Song")
    assert by_id["A003"]["artist"] is None


def test_bimodal_header_not_found(tmp_path):
    _write_rows(tmp_path / "MER-Bimodal-Dataset.csv", [["preamble"], ["Song Code", "Quadrant"], ["A001", "Q1"]])
    with pytest.raises(ValueError, match=r"MER-Bimodal-Dataset.csv: no header row with column\(s\) 'Song Code', 'Lyrics Code', 'Quadrant'"):
        prepare_bimodal(tmp_path)


def test_bimodal_bad_quadrant(tmp_path):
    _bimodal_files(tmp_path)
    _write_rows(tmp_path / "MER-Bimodal-Dataset.csv", _bimodal_rows("Q0"))
    with pytest.raises(ValueError, match=r"data row 2 \(Song Code A002\).*'Q0'"):
        prepare_bimodal(tmp_path)


def test_bimodal_sheet_absent(tmp_path):
    with pytest.raises(FileNotFoundError, match="MER-Bimodal-Dataset.xls"):
        prepare_bimodal(tmp_path)


# --------------------------------------------------------------------------- Deezer, built here


def _write_deezer(root: Path) -> None:
    root.mkdir()
    header = "dzr_sng_id,MSD_sng_id,MSD_track_id,valence,arousal,artist_name,track_name\n"
    (root / "train.csv").write_text(header + "1,S1,T1,0.5,-0.2,Beyoncé,Halo\n2,S2,T2,-1.0,1.5,Muse,Uprising\n")
    (root / "validation.csv").write_text(header + "3,S3,T3,0.0,0.1,Nobody,Unknown\n")
    (root / "test.csv").write_text(header + "4,S4,T4,1.0,1.0,Daft Punk,Get Lucky (Radio Edit)\n")


def test_deezer_requires_a_join_table(tmp_path):
    _write_deezer(tmp_path / "deezer")
    with pytest.raises(ValueError, match="join table is required"):
        prepare_deezer(tmp_path / "deezer")


def test_deezer_join_by_id_and_title(tmp_path):
    _write_deezer(tmp_path / "deezer")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips/halo.mp3").write_bytes(b"x")
    join = tmp_path / "join.csv"
    pd.DataFrame(
        {
            "dzr_sng_id": ["1", "", ""],
            "artist_name": ["", "MUSE", "Daft Punk feat. Pharrell"],
            "track_name": ["", "Uprising!", "Get Lucky"],
            "audio_uri": ["clips/halo.mp3", "clips/missing.mp3", ""],
            "lyrics": ["", "They will not force us", "Like the legend of the phoenix"],
        }
    ).to_csv(join, index=False)
    table = prepare_deezer(tmp_path / "deezer", join=str(join))
    rows = {r["source_id"]: r for r in table.to_pylist()}
    assert set(rows) == {"1", "2", "4"}  # 3 (Nobody - Unknown) is not in the join table
    assert rows["1"]["audio_uri"] == str((tmp_path / "clips/halo.mp3").resolve())
    assert rows["2"]["audio_uri"] is None and rows["2"]["lyrics"] == "They will not force us"
    assert rows["1"]["quadrant"] == 4 and rows["2"]["quadrant"] == 2  # valence/arousal kept as centred
    stats = adapter_stats(table)
    assert stats["match_rate"] == pytest.approx(3 / 4)
    assert stats["skipped"]["songs not in the join table (dropped)"] == 1
    assert stats["skipped"]["audio files listed in the join table but absent"] == 1


def test_deezer_missing_column(tmp_path):
    root = tmp_path / "deezer"
    root.mkdir()
    for split in ("train", "validation", "test"):
        (root / f"{split}.csv").write_text("dzr_sng_id,valence,artist_name,track_name\n1,0.1,A,B\n")
    join = tmp_path / "j.csv"
    join.write_text("dzr_sng_id,lyrics\n1,la\n")
    with pytest.raises(ValueError, match=r"train.csv: missing column\(s\) 'arousal'"):
        prepare_deezer(root, join=str(join))


# --------------------------------------------------------------------------- MoodyLyrics4Q, built here


def test_moodylyrics4q_json_txt_and_missing(tmp_path):
    (tmp_path / "lyrics").mkdir()
    pd.DataFrame(
        {"index": ["ML1", "ML2", "ML3"], "artist": ["A", "B", "C"], "title": ["x", "y", "z"],
         "mood": ["angry", "relaxed", "sad"], "split": ["train", "train", "test"]}
    ).to_csv(tmp_path / "MoodyLyrics4Q_cleaned_split.csv", index=False)
    doc = {"id": 1, "song": {"title": "x", "lyrics": "x Lyrics[Verse 1]\nshout it out5Embed"}}
    (tmp_path / "lyrics/ML1_A_x.json").write_text(json.dumps(doc))
    (tmp_path / "lyrics/ML2_B_y.txt").write_text("calm water")
    table = prepare_moodylyrics4q(tmp_path)
    rows = _check_manifest(table, "moodylyrics4q")
    assert [(r["source_id"], r["quadrant"], r["lyrics"]) for r in rows] == [
        ("ML1", 2, "x Lyrics[Verse 1]\nshout it out5Embed"), ("ML2", 4, "calm water")
    ]
    assert adapter_stats(table)["skipped"] == {"rows without a lyrics file (skipped)": 1}
    assert prepare_moodylyrics4q(tmp_path, splits="test").num_rows == 0


def test_moodylyrics4q_unknown_mood(tmp_path):
    pd.DataFrame({"index": ["ML1"], "artist": ["A"], "title": ["x"], "mood": ["bored"]}).to_csv(
        tmp_path / "MoodyLyrics4Q_cleaned_split.csv", index=False
    )
    with pytest.raises(ValueError, match=r"line 2 \(index ML1\): unknown mood 'bored'"):
        prepare_moodylyrics4q(tmp_path)


# --------------------------------------------------------------------------- generic


def test_generic_mapping_and_midpoint(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    pd.DataFrame(
        {"id": ["s1", "s2", "s3"], "path": ["a.wav", "gone.wav", ""], "text": ["", "words", "more"],
         "v": [7.0, 2.0, 5.0], "a": [6.0, 8.0, 4.0]}
    ).to_parquet(tmp_path / "mine.parquet")
    table = prepare_generic(str(tmp_path / "mine.parquet"), song_id="id", audio_uri="path", lyrics="text",
                            valence="v", arousal="a", midpoint=5.0, dataset="mine")
    rows = {r["source_id"]: r for r in _check_manifest(table, "mine")}
    assert rows["s1"]["audio_uri"] == str((tmp_path / "a.wav").resolve()) and rows["s1"]["quadrant"] == 1
    assert rows["s2"]["audio_uri"] is None and rows["s2"]["quadrant"] == 2  # absent file counted, lyrics kept
    assert rows["s3"]["valence"] == 0.0 and rows["s3"]["quadrant"] == 3  # the midpoint is low
    assert adapter_stats(table)["skipped"] == {"audio files listed but absent": 1}


def test_generic_errors(tmp_path):
    path = tmp_path / "mine.csv"
    pd.DataFrame({"id": ["s1"], "text": ["la"], "mood_q": ["Q7"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) 'lyric'"):
        prepare_generic(str(path), song_id="id", lyrics="lyric", quadrant="mood_q")
    with pytest.raises(ValueError, match="no label"):
        prepare_generic(str(path), song_id="id", lyrics="text")
    with pytest.raises(ValueError, match=r"row 1 \(id s1\): not a quadrant: 'Q7'"):
        prepare_generic(str(path), song_id="id", lyrics="text", quadrant="mood_q")


def test_song_key_normalisation():
    assert normalise_name("Beyoncé feat. Jay-Z") == "beyonce"
    assert normalise_name("Get Lucky (Radio Edit) [Remastered]") == "get lucky"
    assert song_key("Simon & Garfunkel", "The Boxer!") == song_key("simon and garfunkel", "the boxer")
    assert song_key("", "Title") is None and song_key(None, "x") is None


# --------------------------------------------------------------------------- mirex (mode classes)


def _mirex_layout(root: Path, clusters: list[str], present: dict[int, tuple[bool, bool]], titles: dict[int, str] | None = None):
    """A MIREX-layout folder: every song listed, files only for `present` {song: (audio, lyrics)}."""
    (root / "Audio").mkdir(parents=True)
    (root / "Lyrics").mkdir()
    (root / "clusters.txt").write_text("\n".join(clusters) + "\n\n")
    (root / "categories.txt").write_text("\n".join(["Rousing"] * len(clusters)) + "\n")
    meta = ["Title;Artist;Album;Track;Year;Length;Size;Last Modified;Filename;"]
    for i in range(1, len(clusters) + 1):
        title = (titles or {}).get(i, f"Song {i}")
        meta.append(f"{title};Artist {i};Album {i};1;1999;30;352,00 KB;09-09-2010;{i:03d}.mp3;")
    (root / "dataset info.csv").write_bytes("\r\n".join(meta).encode("utf-16"))
    for i, (audio, lyrics) in present.items():
        if audio:
            (root / "Audio" / f"{i:03d}.mp3").write_bytes(b"not decoded here")
        if lyrics:
            (root / "Lyrics" / f"{i:03d}.txt").write_bytes(b"line one\r\nline two\r\n")


def test_mirex_layout_labels_counts_absent_songs_and_reads_utf16_metadata(tmp_path):
    from train.data.datasets.mirex import prepare_mirex

    clusters = ["Cluster 1", "Cluster 2", "Cluster 5", "Cluster 3", "Cluster 4"]
    _mirex_layout(tmp_path, clusters, {1: (True, True), 2: (True, False), 3: (False, True)},
                  titles={1: "World's a Mess; It's in My Kiss"})
    table = prepare_mirex(tmp_path)
    validate(table.schema, MANIFEST)
    rows = {r["source_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["001", "002", "003"]  # 004 and 005 are listed but absent: counted, not rows
    assert [rows[s]["label"] for s in ("001", "002", "003")] == ["Cluster 1", "Cluster 2", "Cluster 5"]
    assert all(r["quadrant"] is None and r["song_id"] == f"mirex:{r['source_id']}" for r in rows.values())
    assert rows["001"]["title"] == "World's a Mess; It's in My Kiss" and rows["001"]["artist"] == "Artist 1"
    assert "line one" in rows["001"]["lyrics"] and "line two" in rows["001"]["lyrics"]
    assert rows["002"]["lyrics"] is None and rows["003"]["audio_uri"] is None
    stats = adapter_stats(table)
    assert stats["listed"] == 5 and stats["classes"] == {"Cluster 1": 1, "Cluster 2": 1, "Cluster 5": 1}
    assert stats["skipped"]["clips listed but absent"] == 3
    assert stats["skipped"]["rows with neither audio nor lyrics (dropped)"] == 2


def test_mirex_metadata_that_disagrees_with_the_clusters_is_an_error(tmp_path):
    from train.data.datasets.mirex import prepare_mirex

    _mirex_layout(tmp_path, ["Cluster 1", "Cluster 2"], {1: (True, True)})
    (tmp_path / "categories.txt").write_text("Rousing\n")
    with pytest.raises(ValueError, match=r"categories.txt: 1 songs, but .*clusters.txt lists 2"):
        prepare_mirex(tmp_path)
    with pytest.raises(FileNotFoundError, match="MIREX clusters not found"):
        prepare_mirex(tmp_path / "nowhere")


@pytest.mark.realdata
def test_mirex_real_slice(shared_data):
    from train.data.datasets.mirex import prepare_mirex

    table = prepare_mirex(shared_data / "mirex")
    rows = table.to_pylist()
    assert len(rows) == 200 and all(r["audio_uri"] and r["lyrics"] for r in rows)
    assert pd.Series([r["label"] for r in rows]).value_counts().to_dict() == {f"Cluster {c}": 40 for c in range(1, 6)}
    stats = adapter_stats(table)
    assert stats["listed"] == 903 and stats["skipped"]["rows with neither audio nor lyrics (dropped)"] == 703
    by_id = {r["source_id"]: r for r in rows}
    assert by_id["008"]["title"] == "Cigarettes and Alcohol"


def test_generic_label_mapping_makes_a_classes_dataset(tmp_path):
    path = tmp_path / "mine.csv"
    pd.DataFrame({"id": ["s1", "s2"], "text": ["la", "da"], "mood": ["Calm", "Epic"], "q": ["Q1", "Q2"]}).to_csv(path, index=False)
    rows = {r["source_id"]: r for r in prepare_generic(str(path), song_id="id", lyrics="text", label="mood").to_pylist()}
    assert rows["s1"]["label"] == "Calm" and rows["s1"]["quadrant"] is None
    with pytest.raises(ValueError, match="either label"):
        prepare_generic(str(path), song_id="id", lyrics="text", label="mood", quadrant="q")
