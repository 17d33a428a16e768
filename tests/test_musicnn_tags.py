"""`labeler label --tags` / `labeler serve --tags`: the MusiCNN encoder's 50 tag probabilities as a column.

The tag names are checked against the musicnn wheel's own file (read with ast, never imported). The
bundles here are built offline with a randomly initialised MusiCNN (the pretrained weights change the
numbers, not the plumbing): the Predictor's taggram must be musicnn's (sigmoid of each patch's tag
logits, averaged over the patches) from a single run of the backbone, the column a map tag -> P with
nulls where no audio was used, and a bundle without a MusiCNN audio branch a one-line user error.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from labeler.audio import FeaturizerConfig
from labeler.bundle.store import save_bundle
from labeler.inference.predict import Predictor
from labeler.models import AudioCnnConfig, EmotionModel, ModelConfig
from labeler.musicnn import wheel
from labeler.musicnn.model import PATCH_FRAMES
from labeler.musicnn.tags import MSD_MUSICNN_TAGS, MTT_MUSICNN_TAGS, TAGS, bundle_tags
from tests.helpers import tiny_featurizer

CLIP_SECONDS = 6.0  # two 3-s musicnn patches


def _wheel_labels() -> dict[str, list[str]]:
    path = wheel.default_dir() / "configuration.py"
    if not path.is_file():
        pytest.skip(f"the musicnn wheel is not unpacked at {path.parent}: run `{wheel.INSTALL_STEP}`")
    labels = {}
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id.endswith("_LABELS"):
            labels[node.targets[0].id] = ast.literal_eval(node.value)
    return labels


def test_tag_names_are_the_wheels_in_its_order():
    labels = _wheel_labels()
    assert list(MSD_MUSICNN_TAGS) == labels["MSD_LABELS"] and list(MTT_MUSICNN_TAGS) == labels["MTT_LABELS"]
    assert set(TAGS) == set(wheel.MODEL_IDS)
    assert all(len(names) == len(set(names)) == 50 for names in TAGS.values())


def test_only_a_musicnn_audio_branch_has_tags():
    assert bundle_tags("fusion", {"arch": "MusiCNN", "encoder": "MTT_musicnn"}) == MTT_MUSICNN_TAGS
    with pytest.raises(ValueError, match="audio branch of bundle b is Cnn6, which has no tag layer"):
        bundle_tags("audio", {"arch": "Cnn6", "encoder": "MSD_musicnn"}, "bundle b")
    with pytest.raises(ValueError, match="is a lyrics model without an audio branch"):
        bundle_tags("lyrics", None)


def _musicnn_model(branch: str = "audio", lyrics=None, encoder_config=None) -> EmotionModel:
    torch.manual_seed(0)
    config = ModelConfig(branch=branch, mode="4Q", audio=AudioCnnConfig(arch="MusiCNN", n_mels=96, embedding_dim=16),
                         lyrics=lyrics, hidden_dim=16)
    model = EmotionModel(config, encoder_config=encoder_config).eval()
    # random BatchNorm statistics, so the tag layer sees varied inputs (fresh ones are the identity)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def musicnn_bundle(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("tags") / "bundle")
    save_bundle(uri, _musicnn_model(), FeaturizerConfig.musicnn(clip_seconds=CLIP_SECONDS), None, model_id="musicnn-tags")
    return uri


def _backbone_runs(predictor: Predictor) -> list[int]:
    """A counter of backbone runs: its input BatchNorm runs once per forward of the network."""
    calls: list[int] = []
    predictor.model.audio_encoder.cnn.backbone.bn_input.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_predictor_tags_are_musicnns_taggram_from_one_backbone_run(musicnn_bundle):
    torch.manual_seed(1)
    log_mel = (torch.rand(3, 2 * PATCH_FRAMES, 96) * 4).numpy()
    batch = {"song_id": np.array(["a", "b", "c"], dtype=object), "log_mel": log_mel,
             "audio_error": np.array([None, None, "missing_file: c.wav"], dtype=object)}
    # The reference engine: the hook counts PyTorch runs (ONNX Runtime's trunk bypasses the module's hooks).
    predictor = Predictor(musicnn_bundle, device="cpu", batch_size=8, tags=True, engine="torch")
    assert predictor.tag_names == MSD_MUSICNN_TAGS
    runs = _backbone_runs(predictor)
    out = predictor(batch)
    assert len(runs) == 1  # one network run feeds both the mood head and the tag layer

    backbone = predictor.model.audio_encoder.cnn.backbone
    with torch.inference_mode():
        patches = torch.from_numpy(log_mel[:2]).reshape(4, PATCH_FRAMES, 96)
        expected = torch.sigmoid(backbone.tags(backbone.embed(patches))).reshape(2, 2, 50).mean(dim=1).numpy()
    assert out["tags"].shape == (3, 50) and out["tags"].dtype == np.float32
    np.testing.assert_allclose(out["tags"][:2], expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(out["tags"][2]).all() and out["error"][2].startswith("missing_file")
    assert expected.std() > 0.01  # a taggram that says something, not a constant

    plain = Predictor(musicnn_bundle, device="cpu", batch_size=8, engine="torch")(batch)  # --tags changes no label
    assert "tags" not in plain
    np.testing.assert_allclose(out["probs"][:2], plain["probs"][:2], rtol=1e-5, atol=1e-6)
    fast = Predictor(musicnn_bundle, device="cpu", batch_size=8, tags=True)(batch)  # the default CPU engine
    np.testing.assert_allclose(fast["tags"][:2], out["tags"][:2], atol=1e-4)
    np.testing.assert_allclose(fast["probs"][:2], out["probs"][:2], atol=1e-4)


def test_fused_model_tags_rows_with_audio_and_leaves_lyrics_only_rows_null(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from labeler.lyrics.text import LyricsConfig
    from labeler.models import LyricsEncoderConfig
    from tests.tiny_models import tiny_bert_dir

    bert = tiny_bert_dir(tmp_path)
    model = _musicnn_model("fusion", LyricsEncoderConfig(name_or_path=bert), AutoConfig.from_pretrained(bert))
    uri = str(tmp_path / "fusion")
    save_bundle(uri, model, FeaturizerConfig.musicnn(clip_seconds=3.0), LyricsConfig(max_tokens=8),
                tokenizer=AutoTokenizer.from_pretrained(bert))
    log_mel = (torch.rand(3, PATCH_FRAMES, 96) * 4).numpy()
    log_mel[1] = np.nan  # what the featuriser leaves for a song without audio
    batch = {"log_mel": log_mel, "audio_error": np.array([None, "no_audio: null audio_uri", None], dtype=object),
             "input_ids": np.array([[2, 7, 3, 0], [2, 8, 9, 3], [0, 0, 0, 0]]),
             "attention_mask": np.array([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]),
             "has_lyrics": np.array([True, True, False])}
    predictor = Predictor(uri, device="cpu", batch_size=8, tags=True, engine="torch")  # hooks count PyTorch runs
    runs = _backbone_runs(predictor)
    out = predictor(batch)
    assert list(out["modalities"]) == ["audio+lyrics", "lyrics", "audio"] and len(runs) == 1
    assert np.isfinite(out["tags"][[0, 2]]).all() and np.isnan(out["tags"][1]).all()
    plain = Predictor(uri, device="cpu", batch_size=8, engine="torch")(batch)
    np.testing.assert_allclose(out["probs"], plain["probs"], rtol=1e-5, atol=1e-6)


def test_a_bundle_without_musicnn_refuses_tags(tmp_path):
    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(branch="audio", mode="4Q", lyrics=None,
                                     audio=AudioCnnConfig(n_mels=32, width=0.125, embedding_dim=16))).eval()
    save_bundle(str(tmp_path / "cnn6"), model, tiny_featurizer(), None)
    with pytest.raises(ValueError, match="is Cnn6, which has no tag layer"):
        Predictor(str(tmp_path / "cnn6"), device="cpu", tags=True)


def _info():
    from labeler.bundle.info import BundleInfo

    return BundleInfo(uri="/b", model_id="m", model_version="v1", mode="4Q", classes=("Q1", "Q2", "Q3", "Q4"),
                      branch="fusion", featurizer={}, lyrics={}, audio_model={"arch": "MusiCNN", "encoder": "MSD_musicnn"})


def test_tags_column_is_a_map_readable_without_custom_code(tmp_path):
    import duckdb
    import pandas as pd

    from labeler.contracts.schemas import TAGS_COLUMN, labels_contract, validate
    from labeler.inference.label_rows import label_rows
    from labeler.label_job import LabelJobConfig, OutputLayout
    from labeler.label_job.layout import check_same_optional_columns

    tags = np.tile(np.linspace(0.01, 0.99, 50, dtype=np.float32), (3, 1))
    tags[1] = np.nan  # labelled from lyrics alone
    batch = {"song_id": np.array(["a", "b", "c"], dtype=object),
             "probs": np.array([[0.4, 0.3, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [np.nan] * 4], np.float32),
             "error": np.array([None, None, "no_audio: x; no_lyrics: y"], dtype=object), "tags": tags}
    table = label_rows(batch, _info(), datetime.now(UTC))
    validate(table.schema, labels_contract(tags=True))
    assert table.column_names[-1] == "tags" and table.schema.field("tags").type == TAGS_COLUMN.type
    first, second, third = table.column("tags").to_pylist()
    assert dict(first)["rock"] == pytest.approx(0.01) and dict(first)["happy"] == pytest.approx(0.99)
    assert [k for k, _ in first] == list(MSD_MUSICNN_TAGS) and second is None and third is None

    version = tmp_path / "version=0123456789abcdef"
    version.mkdir()
    pq.write_table(table, version / "part-x.parquet")
    assert dict(pd.read_parquet(version / "part-x.parquet").loc[0, "tags"])["sad"] == pytest.approx(first[47][1])
    assert duckdb.sql(f"SELECT tags['chillout'] FROM '{version}/part-x.parquet' WHERE song_id = 'a'").fetchall()[0][0] \
        == pytest.approx(dict(first)["chillout"])
    layout = OutputLayout(str(tmp_path), "0123456789abcdef")
    check_same_optional_columns(layout, LabelJobConfig(tags=True))
    with pytest.raises(ValueError, match="labelled with --tags; this run asks for none of"):
        check_same_optional_columns(layout, LabelJobConfig())
    with pytest.raises(ValueError, match="no tag layer"):  # the column's keys come from the bundle's encoder
        label_rows(batch, replace(_info(), audio_model={"arch": "Cnn6"}), datetime.now(UTC))


def _wav(path, seconds: float, freq: float, sr: int = 22050) -> str:
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32), sr)
    return str(path)


@pytest.mark.slow
def test_label_tags_end_to_end(musicnn_bundle, ray_local, tmp_path, capsys):
    """`labeler label --tags` on real audio files: the map's 50 keys and values in [0, 1]; null for a missing file."""
    from jobs import cli

    catalogue = tmp_path / "catalogue.parquet"
    uris = [_wav(tmp_path / f"s{i}.wav", 8.0, 220.0 * (i + 1)) for i in range(3)] + [str(tmp_path / "gone.wav")]
    pq.write_table(pa.table({"song_id": ["s0", "s1", "s2", "gone"], "audio_uri": uris,
                             "lyrics": pa.array([None] * 4, pa.string())}), catalogue)
    out = tmp_path / "labels"
    assert cli.main(["label", "--catalogue", str(catalogue), "--bundle", musicnn_bundle, "--output", str(out),
                     "--tags", "--max-actors", "1", "--predict-batch-size", "4"]) == 0, capsys.readouterr().err
    table = pq.read_table(next(out.glob("version=*")))
    rows = {r["song_id"]: r for r in table.to_pylist()}
    assert table.schema.field("tags").type == pa.map_(pa.string(), pa.float32())
    for song in ("s0", "s1", "s2"):
        tags = dict(rows[song]["tags"])
        assert list(tags) == list(MSD_MUSICNN_TAGS) and all(0.0 <= p <= 1.0 for p in tags.values())
        assert rows[song]["error"] is None
    assert rows["s0"]["tags"] != rows["s2"]["tags"]  # different audio, different taggram
    assert rows["gone"]["tags"] is None and rows["gone"]["error"].startswith("missing_file")


def test_serve_answers_with_tags(musicnn_bundle, tmp_path):
    """`labeler serve --tags`: the flag reaches ServeConfig, and the replica's stages answer with the map."""
    import argparse
    import json

    from jobs.commands.serve import config_from_args, configure_parser
    from labeler.bundle.info import read_bundle_info
    from labeler.inference.label_rows import label_rows
    from labeler.serve import SongFeaturiser, row_to_json, song_from_fields

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    config = config_from_args(parser.parse_args(["--bundle", musicnn_bundle, "--tags"]))
    assert config.tags is True
    info = read_bundle_info(musicnn_bundle)
    audio = open(_wav(tmp_path / "up.wav", 7.0, 440.0), "rb").read()
    batch = SongFeaturiser(info, config)(song_from_fields({"song_id": "up"}, audio=audio, audio_name="up.wav"))
    predictor = Predictor(musicnn_bundle, device="cpu", batch_size=4, tags=True)
    row = row_to_json(label_rows(predictor(batch), info, datetime.now(UTC)).to_pylist()[0])
    assert row["error"] is None and list(row["tags"]) == list(MSD_MUSICNN_TAGS)
    assert all(0.0 <= p <= 1.0 for p in row["tags"].values())
    json.dumps(row)
