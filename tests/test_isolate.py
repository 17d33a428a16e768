"""labeler.runtime.isolate: a row that kills the featuriser's process is pinned on that row, with a real SIGSEGV
injected by tests/poison/sitecustomize.py into the isolation child (no hook in production code)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from labeler.audio import Featurizer, FeaturizerConfig
from labeler.runtime.isolate import ChildProcess, IsolatedFeaturizer, describe_exit
from synth import SynthConfig, synthesise
from tests.poison import sitecustomize as poison

CONFIG = FeaturizerConfig(sample_rate=16000, clip_seconds=2.0, window_size=512, n_mels=32, fmax=8000.0,
                          chorus_search_seconds=10.0)


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    root = tmp_path_factory.mktemp("isolate")
    synth = synthesise(SynthConfig(songs=7, seconds=5.0, formats=("wav",), corrupt=False, output=str(root)))
    return [s.audio_uri for s in synth.songs]


def _batch(uris: list[str]) -> dict[str, np.ndarray]:
    return {"song_id": np.array([f"s{i}" for i in range(len(uris))], dtype=object),
            "audio_uri": np.array(uris, dtype=object),
            "lyrics": np.array(["words"] * len(uris), dtype=object)}


def test_describe_exit_names_the_signal():
    assert describe_exit(-11) == "killed by SIGSEGV"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with status 3"


def test_a_crashing_row_is_isolated_and_every_other_row_is_featurised(songs):
    poisoned = os.path.join(os.path.dirname(songs[4]), poison.POISON_FILE)  # conftest exported the poison
    shutil.copy(songs[4], poisoned)
    songs = [*songs[:4], poisoned, *songs[5:]]
    child = ChildProcess()
    try:
        featurizer = IsolatedFeaturizer(CONFIG.to_dict(), retries=1, child=child)
        out = featurizer(_batch(songs))
    finally:
        child.close()
    expected = Featurizer(CONFIG)(_batch(songs))  # this process is not poisoned: the reference features
    errors = list(out["audio_error"])
    assert errors[4].startswith("worker_crash: ") and errors[4].endswith("killed by SIGSEGV"), errors[4]
    assert os.path.basename(poisoned) in errors[4]
    assert [e is None for i, e in enumerate(errors) if i != 4] == [True] * 6
    keep = [i for i in range(len(songs)) if i != 4]
    np.testing.assert_array_equal(out["log_mel"][keep], expected["log_mel"][keep])
    assert not out["log_mel"][4].any()
    assert list(out["song_id"]) == list(expected["song_id"]) and list(out["lyrics"]) == ["words"] * 7
    # 7 rows: the batch, halves [0:3] ok / [3:7], [3:5] / [5:7] ok, [3] ok / [4]: 4 crashes, then 1 retry alone
    assert featurizer.isolated.crashes == 5
    assert child.starts == 6


def test_child_exceptions_are_raised_in_the_parent_not_taken_for_crashes(songs):
    child = ChildProcess()
    try:
        with pytest.raises(RuntimeError, match="KeyError|audio_uri"):
            child.call("labeler.audio:Featurizer", {"config": CONFIG.to_dict()}, {"song_id": np.array(["x"], dtype=object)})
        assert child.starts == 1
    finally:
        child.close()
