"""The built-in real-music model: assembled from its shipped parts and the pinned wheels, the default of `label`.

The parts are the package data `labeler/builtin/parts/`; every test assembles into a private home of its own
(XDG_CACHE_HOME under tmp_path), never the person's cache.
"""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from jobs import cli
from labeler.builtin import parts as parts_mod
from labeler.builtin.assemble import builtin_bundle, resolve_bundle
from labeler.builtin.examples import recordings, write_catalogue
from labeler.builtin.parts import TRAINED_FILE, BuiltinError, read_manifest
from labeler.bundle.verified import WEIGHTS_FILE, verify_bundle


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One assembled built-in bundle for the module, in a private cache home the CLI also finds (XDG_CACHE_HOME)."""
    root = tmp_path_factory.mktemp("builtin-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root))
        mp.setenv("MOOD_LABELER_LOG_DIR", str(root / "logs"))
        builtin_bundle()
        yield root


def test_assembled_bundle_verifies_and_records_its_provenance(home, tmp_path):
    manifest = read_manifest()
    uri, line = resolve_bundle("builtin")
    assert uri.startswith(str(home))  # the private home, not a shared path
    bundle = verify_bundle(uri, expect_version=manifest.model_version)
    config = bundle.config
    assert config["mode"] == "4Q" and config["model"]["branch"] == "fusion" and config["model_id"] == "mood-4q-builtin"
    built = config["provenance"]["builtin"]
    assert built["rebuild"].startswith("bash scripts/build_builtin.sh") and built["commit"]
    names = {d["name"]: d for d in built["datasets"]}
    assert set(names) == {"4q", "moodylyrics4q"} and all(d["songs"] > 0 and "research" in d["licence"] for d in names.values())
    assert built["dev_cv"]["branches"]["fusion"] and built["dev_cv"]["baselines"]
    assert line.startswith(f"model: built-in mood-4q-builtin {manifest.model_version} (4Q") and "4q" in line
    # the pretrained encoders are not shipped: the parts are small, the assembled weights large
    assert (manifest.root / TRAINED_FILE).stat().st_size < 10_000_000
    assert len(manifest.wheel_tensors) > 0
    # another install assembles the same bytes, so the same model_version
    again = builtin_bundle(home=tmp_path / "other")
    assert verify_bundle(again).model_version == manifest.model_version
    assert (tmp_path / "other" / "builtin").stat().st_mode & 0o077 == 0


def test_label_without_a_bundle_argument_labels_the_shipped_recordings(home, ray_local, tmp_path, capsys):
    catalogue = str(tmp_path / "catalogue.parquet")
    shipped = write_catalogue(catalogue)
    assert len(shipped) >= 3 and all(r.licence_file.is_file() and r.credit for r in shipped)
    assert cli.main(["label", "--catalogue", catalogue, "--output", str(tmp_path / "labels")]) == 0
    out = capsys.readouterr().out
    version = read_manifest().model_version
    assert f"model: built-in mood-4q-builtin {version}" in out
    labels = pq.read_table(tmp_path / "labels" / f"version={version}").to_pandas()
    assert sorted(labels["song_id"]) == sorted(r.name for r in recordings())
    assert labels["error"].isna().all() and set(labels["quadrant"]) <= {"Q1", "Q2", "Q3", "Q4"}
    assert (labels["model_id"] == "mood-4q-builtin").all() and (labels["model_version"] == version).all()


def _tampered_parts(tmp_path):
    copy = tmp_path / "parts"
    shutil.copytree(parts_mod.PARTS_DIR, copy)
    data = bytearray((copy / TRAINED_FILE).read_bytes())
    data[-1] ^= 0xFF
    (copy / TRAINED_FILE).write_bytes(bytes(data))
    return copy


def test_a_tampered_shipped_part_is_refused_in_one_line(home, tmp_path, monkeypatch, capsys):
    copy = _tampered_parts(tmp_path)
    with pytest.raises(BuiltinError, match=f"{TRAINED_FILE} has sha256 .*tampered"):
        builtin_bundle(copy, home=tmp_path / "fresh")
    monkeypatch.setattr(parts_mod, "PARTS_DIR", copy)
    catalogue = str(tmp_path / "c.parquet")
    write_catalogue(catalogue)
    assert cli.main(["label", "--catalogue", catalogue, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tampered" in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_missing_wheel_checkpoint_names_the_setup_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOOD_LABELER_MUSICNN_DIR", str(tmp_path / "no-musicnn"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MOOD_LABELER_LOG_DIR", str(tmp_path / "logs"))
    with pytest.raises(ValueError, match="bash scripts/setup.sh"):
        builtin_bundle()
    catalogue = str(tmp_path / "c.parquet")
    write_catalogue(catalogue)
    assert cli.main(["label", "--catalogue", catalogue, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bash scripts/setup.sh" in err[0], err
    assert not list((tmp_path / "cache" / "mood-labeler" / "builtin").glob("*/config.json"))  # nothing half-made


def test_evaluate_builtin_on_a_tiny_manifest(home, tmp_path, capsys):
    import pyarrow as pa

    from labeler.contracts.schemas import MANIFEST, conform
    from labeler.io import storage

    rows = [{"song_id": r.name, "dataset": "examples", "audio_uri": str(r.path), "lyrics": None, "valence": None,
             "arousal": None, "quadrant": 1 + i % 4, "fold": 0} for i, r in enumerate(recordings())]
    manifest = str(tmp_path / "m.parquet")
    storage.write_parquet(conform(pa.Table.from_pylist(rows), MANIFEST), manifest)
    assert cli.main(["evaluate", "--bundle", "builtin", "--manifest", manifest]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)  # stdout is only the metrics; the model line goes to stderr
    assert metrics["n"] == len(rows) and metrics["model_id"] == "mood-4q-builtin" and 0.0 <= metrics["accuracy"] <= 1.0
    assert "model: built-in mood-4q-builtin" in captured.err
    assert WEIGHTS_FILE in verify_bundle(resolve_bundle(None)[0]).files
