"""The musicnn port: the checkpoint reader, the wheel's pinned files, the PyTorch network's parity with the
original TensorFlow graph (tests/fixtures/musicnn_reference.npz, made by tests/fixtures/musicnn_reference.py).

These use the real checkpoints that `scripts/setup.sh` unpacks; they skip, naming that step, where it
has not run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from labeler.audio import FeaturizerConfig, featurise_track
from labeler.musicnn import wheel
from labeler.musicnn.checkpoint import CheckpointError, read_checkpoint, read_index
from labeler.musicnn.model import MusiCNN, load_musicnn, tf_variable_map

FIXTURE = Path(__file__).parent / "fixtures" / "musicnn_reference.npz"


@pytest.fixture(scope="module")
def wheel_dir(musicnn_available) -> Path:
    return wheel.default_dir()


@pytest.fixture()
def msd_copy(wheel_dir, tmp_path) -> Path:
    """A writable copy of the MSD_musicnn checkpoint (index + data) under tmp_path/musicnn/."""
    target = tmp_path / "musicnn" / "MSD_musicnn"
    target.mkdir(parents=True)
    for name in (".index", wheel.DATA_FILE):
        shutil.copy(wheel_dir / "MSD_musicnn" / name, target / name)
    return target


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_reader_lists_the_model_variables_with_their_shapes(wheel_dir):
    index = read_index(wheel_dir / "MSD_musicnn" / ".index")
    model_vars = {k: v["shape"] for k, v in index.items() if "Adam" not in k and not k.startswith("beta")}
    assert len(model_vars) == 64
    assert model_vars["conv2d/kernel"] == (7, 38, 1, 204)
    assert model_vars["conv2d_1/kernel"] == (7, 67, 1, 204)
    assert [model_vars[f"conv2d_{i}/kernel"] for i in (2, 3, 4)] == [(128, 1, 1, 51), (64, 1, 1, 51), (32, 1, 1, 51)]
    assert model_vars["conv2d_5/kernel"] == (7, 561, 1, 64)
    assert model_vars["dense/kernel"] == (1506, 200) and model_vars["dense_1/kernel"] == (200, 50)
    # every mapped TF variable exists and fits the PyTorch module
    assert {tf for tf, _ in tf_variable_map().values()} <= set(model_vars)
    values = read_checkpoint(str(wheel_dir / "MSD_musicnn") + "/", ["dense/kernel"])
    assert values["dense/kernel"].dtype == np.float32 and np.isfinite(values["dense/kernel"]).all()


def test_corrupted_index_fails_clearly(msd_copy):
    index = msd_copy / ".index"
    _flip_byte(index, 100)  # inside a data block: its crc32c no longer matches
    with pytest.raises(CheckpointError, match=r"\.index: block at \d+ fails its crc32c check"):
        read_checkpoint(str(msd_copy) + "/")
    index.write_bytes(index.read_bytes()[:-20])  # truncated: the footer is gone
    with pytest.raises(CheckpointError, match="not a TensorFlow checkpoint index"):
        read_index(index)


def test_corrupted_or_truncated_data_fails_clearly(msd_copy):
    data = msd_copy / wheel.DATA_FILE
    entry = read_index(msd_copy / ".index")["dense/kernel"]
    _flip_byte(data, entry["offset"] + 17)
    with pytest.raises(CheckpointError, match=r"dense/kernel fails its crc32c check"):
        read_checkpoint(str(msd_copy) + "/", ["dense/kernel"])
    data.write_bytes(data.read_bytes()[:entry["offset"] + 10])
    with pytest.raises(CheckpointError, match=r"dense/kernel ends at byte \d+, past the file's .* \(truncated\)"):
        read_checkpoint(str(msd_copy) + "/", ["dense/kernel"])


def test_a_checkpoint_that_is_not_the_pinned_build_is_refused(msd_copy):
    _flip_byte(msd_copy / wheel.DATA_FILE, 0)
    with pytest.raises(wheel.MusicnnFilesError, match=r"refusing .*\.data-00000-of-00001: sha256 [0-9a-f]{64} does not match"):
        load_musicnn("MSD_musicnn", root=msd_copy.parent)


def test_missing_wheel_files_name_the_install_step(tmp_path, monkeypatch):
    monkeypatch.setenv(wheel.DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(wheel.MusicnnFilesError, match=r"not at .*nowhere.*run `bash scripts/setup.sh"):
        load_musicnn("MSD_musicnn")
    with pytest.raises(ValueError, match="unknown musicnn model 'MSD_vggish'"):
        wheel.checkpoint_prefix("MSD_vggish")


def test_network_rejects_wrong_input_shapes():
    with pytest.raises(ValueError, match=r"patches \(batch, frames, 96\)"):
        MusiCNN()(torch.zeros(1, 187, 64))


@pytest.mark.realdata
@pytest.mark.parametrize("model_id", ["MSD_musicnn", "MTT_musicnn"])
def test_port_matches_the_original_tensorflow_graph(model_id, wheel_dir, shared_data):
    """The project's featuriser (decode, resample, musicnn front end) + the PyTorch port reproduce the TF
    graph's taggram (<= 1e-3) and penultimate embedding on real clips (first 10 s: three patches each)."""
    ref = np.load(FIXTURE)
    cfg = FeaturizerConfig.musicnn(clip_seconds=float(ref["seconds"]))
    net = load_musicnn(model_id)
    for i, clip in enumerate(ref["clips"]):
        features = featurise_track(str(shared_data / "audio" / str(clip)), 0.0, None, cfg)
        patches = torch.from_numpy(features.log_mel).reshape(cfg.patches, 187, 96)
        with torch.inference_mode():
            out = net.features(patches)
        taggram = torch.sigmoid(out["logits"]).numpy()
        assert taggram.shape == ref[f"{model_id}/{i}/taggram"].shape == (3, 50)
        assert np.abs(taggram - ref[f"{model_id}/{i}/taggram"]).max() <= 1e-3
        assert np.abs(out["penultimate"].numpy() - ref[f"{model_id}/{i}/penultimate"]).max() <= 1e-3


def test_musicnn_front_end_config_is_typed_and_fixed():
    cfg = FeaturizerConfig.musicnn(clip_seconds=30.0)
    assert (cfg.sample_rate, cfg.window_size, cfg.hop_size, cfg.n_mels) == (16000, 512, 256, 96)
    assert cfg.patches == 10 and cfg.n_frames == 1870
    assert FeaturizerConfig.musicnn(clip_seconds=10.0).n_frames == 3 * 187
    assert FeaturizerConfig.from_dict(cfg.to_dict()) == cfg and cfg.fingerprint() != FeaturizerConfig().fingerprint()
    with pytest.raises(ValueError, match="fixed geometry"):
        FeaturizerConfig(frontend="musicnn", sample_rate=16000, window_size=512, hop_size=256, n_mels=64, fmin=0, fmax=8000)
    with pytest.raises(ValueError, match="shorter than one musicnn patch"):
        FeaturizerConfig.musicnn(clip_seconds=2.0, min_seconds=1.0)
    with pytest.raises(ValueError, match="frontend='vggish'"):
        FeaturizerConfig(frontend="vggish")
