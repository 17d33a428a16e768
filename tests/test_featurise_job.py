"""labeler.label_job.featurise_job: real Ray Data, real Parquet, real audio, local and on S3 (moto on loopback)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import cli
from labeler.audio import DESCRIPTOR_DIM, FeaturizerConfig
from labeler.contracts.schemas import SchemaError
from labeler.io import storage
from labeler.label_job.featurise_job import error_counts, featurise_catalogue

TRUMPET = "sorohanro_-_solo-trumpet-06.hq.ogg"
CFG = FeaturizerConfig(clip_seconds=3.0, chorus_search_seconds=12.0)


def _catalogue(audio: list[str | None], with_chorus: bool = True) -> pa.Table:
    columns = {
        "song_id": [f"s{i}" for i in range(len(audio))],
        "audio_uri": audio,
        "lyrics": ["la la"] * len(audio),
        "genre": ["pop"] * len(audio),
    }
    if with_chorus:
        columns["chorus_start_s"] = [1.0] + [None] * (len(audio) - 1)
        columns["chorus_end_s"] = [3.5] + [None] * (len(audio) - 1)
    return pa.table(columns)


def _read_back(ray, uri: str) -> dict[str, dict]:
    fs, path = storage.filesystem(uri)
    return {row["song_id"]: row for row in ray.data.read_parquet(path, filesystem=fs).take_all()}


def test_error_counts_by_kind():
    assert error_counts([None, "corrupt: a: b", "corrupt: c", "silent: x", ""]) == {"corrupt": 2, "silent": 1}


def test_catalogue_is_validated_before_any_work(tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"song_id": ["a"], "lyrics": ["x"]}), bad)
    out = tmp_path / "out"
    with pytest.raises(SchemaError, match="missing required column.*audio_uri"):
        featurise_catalogue(str(bad), str(out), CFG)
    assert not out.exists()

    good = tmp_path / "good.parquet"
    pq.write_table(_catalogue([None]), good)
    with pytest.raises(SchemaError, match="keep_columns.*mood"):
        featurise_catalogue(str(good), str(out), CFG, keep_columns=["mood"])
    out.mkdir()
    (out / "part-0.parquet").write_bytes(b"old")
    with pytest.raises(ValueError, match="already holds files.*overwrite"):
        featurise_catalogue(str(good), str(out), CFG)
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        featurise_catalogue(str(tmp_path / "nope.parquet"), str(out), CFG)


def test_cli_featurises_a_local_catalogue(ray_local, shared_data, tmp_path, capsys):
    good = [str(p) for p in sorted((shared_data / "audio").glob("*.ogg"))[:2]]
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(np.random.default_rng(3).bytes(4096))
    catalogue = tmp_path / "catalogue.parquet"
    pq.write_table(_catalogue([*good, None, str(broken), str(tmp_path / "gone.wav")]), catalogue)
    out = tmp_path / "features"
    argv = ["featurise", "--catalogue", str(catalogue), "--output", str(out), "--clip-seconds", "3",
            "--chorus-search-seconds", "12", "--batch-size", "2", "--concurrency", "1", "--keep-columns", "lyrics"]

    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "featurised 5 rows (2 ok)" in printed
    assert "corrupt=1" in printed and "missing_file=1" in printed and "no_audio=1" in printed

    rows = _read_back(ray_local, str(out))
    assert sorted(rows) == ["s0", "s1", "s2", "s3", "s4"]  # one row per catalogue row
    for song_id in ("s0", "s1"):
        mel = rows[song_id]["log_mel"]
        assert mel.shape == (CFG.n_frames, CFG.n_mels) and mel.dtype == np.float16  # round-trips as a tensor
        assert rows[song_id]["audio_error"] is None and np.isfinite(mel.astype(np.float32)).all()
    assert rows["s0"]["chorus_start_used_s"] == pytest.approx(1.0) and rows["s0"]["chorus_end_used_s"] == pytest.approx(4.0, abs=1e-3)
    assert rows["s1"]["chorus_end_used_s"] - rows["s1"]["chorus_start_used_s"] == pytest.approx(3.0, abs=0.01)
    assert rows["s2"]["audio_error"].startswith("no_audio:") and not rows["s2"]["log_mel"].any()
    assert rows["s0"]["lyrics"] == "la la" and "genre" not in rows["s0"]
    # plain pyarrow reads it too (the tensor column is a fixed-size list underneath)
    assert pq.read_table(out, columns=["song_id", "audio_error"]).num_rows == 5

    assert cli.main(argv) == 2  # refuses to append to existing output
    assert "already holds files" in capsys.readouterr().err


def test_featurise_catalogue_on_s3(ray_local, s3_bucket, shared_data):
    source = shared_data / "audio" / TRUMPET
    audio_uri = f"{s3_bucket}/audio/{source.name}"
    storage.write_bytes(audio_uri, source.read_bytes())
    catalogue_uri = f"{s3_bucket}/catalogue/catalogue.parquet"
    storage.write_parquet(_catalogue([audio_uri, f"{s3_bucket}/audio/missing.ogg"], with_chorus=False), catalogue_uri)
    out_uri = f"{s3_bucket}/features"
    storage.write_bytes(f"{out_uri}/stale.parquet", b"from an earlier run")
    cfg = FeaturizerConfig(clip_seconds=3.0, chorus_search_seconds=12.0, descriptors=True)

    summary = featurise_catalogue(catalogue_uri, out_uri, cfg, batch_size=4, concurrency=1, overwrite=True)
    assert not storage.exists(f"{out_uri}/stale.parquet")
    assert summary["rows"] == 2 and summary["ok"] == 1 and summary["errors"] == {"missing_file": 1}
    assert summary["fingerprint"] == cfg.fingerprint()

    # Read back with pyarrow through labeler.io.storage (Ray's tensor type is registered once ray is imported).
    table = storage.read_parquet(out_uri).sort_by("song_id")
    assert table.column("song_id").to_pylist() == ["s0", "s1"]
    mels = table.column("log_mel").combine_chunks().to_numpy()
    assert mels.shape == (2, cfg.n_frames, cfg.n_mels) and mels[0].any() and not mels[1].any()
    descriptors = table.column("descriptors").combine_chunks().to_numpy()
    assert descriptors.shape == (2, DESCRIPTOR_DIM) and descriptors[0].any()
    assert table.column("audio_error")[1].as_py().startswith("missing_file: s3://")
    assert "chorus_start_s" not in table.column_names  # absent in the catalogue: chosen automatically
    assert 0.0 <= table.column("chorus_start_used_s")[0].as_py() <= 5.4 - 3.0

