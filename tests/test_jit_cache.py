"""labeler.runtime.jit_cache: no two processes write one numba cache, and a fresh machine compiles once.

The regression test for issue #22: several fresh processes at once on an empty cache root featurise
real recordings (the automatic chorus search runs librosa's JIT code), then a new process does it again
from the published cache; none crashes and all get the same features.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labeler.runtime import jit_cache

REPO = Path(__file__).resolve().parents[1]


def test_each_process_gets_its_own_directory_under_one_root(tmp_path):
    parent = {"NUMBA_CACHE_DIR": str(tmp_path / "user")}
    mine = jit_cache.configure(parent, pid=100)
    assert parent[jit_cache.ROOT_VAR] == str(tmp_path / "user")
    assert mine == os.path.join(jit_cache.versions_dir(str(tmp_path / "user")), "proc-100")
    assert jit_cache.configure(parent, pid=100) == mine  # idempotent in one process
    child = dict(parent)  # what a subprocess or a Ray worker inherits
    theirs = jit_cache.configure(child, pid=200)
    assert theirs != mine and os.path.dirname(theirs) == os.path.dirname(mine)
    assert child[jit_cache.ROOT_VAR] == parent[jit_cache.ROOT_VAR]


def test_default_root_is_a_private_directory_in_the_users_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env: dict = {}
    path = jit_cache.configure(env, pid=1)
    root = tmp_path / "cache" / "mood-labeler" / "numba"
    assert env[jit_cache.ROOT_VAR] == str(root) and env["NUMBA_CACHE_DIR"] == path
    assert path.startswith(str(root) + os.sep)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700  # checked like any root: tests/test_private_state.py


def test_this_process_was_configured_before_librosa():
    import numba.core.config

    assert os.environ[jit_cache.OWNER_VAR] == str(os.getpid())
    assert numba.core.config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"]


_FEATURISE = """
import sys, numpy as np
from labeler.audio import Featurizer, FeaturizerConfig
uris = sys.argv[2:]
out = Featurizer(FeaturizerConfig(sample_rate=16000, fmax=8000.0, clip_seconds=8.0, chorus_search_seconds=60.0, descriptors=True))(
    {"song_id": np.array(uris, dtype=object), "audio_uri": np.array(uris, dtype=object)})
assert all(e is None for e in out["audio_error"]), list(out["audio_error"])
np.savez(sys.argv[1], log_mel=out["log_mel"], start=out["chorus_start_used_s"], descriptors=out["descriptors"])
"""


@pytest.mark.slow
def test_fresh_processes_at_once_on_an_empty_cache_then_again(shared_data, tmp_path):
    uris = [str(p) for p in sorted((shared_data / "audio").glob("*.ogg")) if "Vibe_Ace" in p.name or "Hungarian" in p.name]
    assert len(uris) == 2
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", jit_cache.OWNER_VAR)}
    env.update({jit_cache.ROOT_VAR: str(tmp_path / "numba"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})

    def start(i: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _FEATURISE, str(tmp_path / f"f{i}.npz"), *uris], env=env,
                                stderr=subprocess.PIPE, text=True)

    first = [start(i) for i in range(3)]
    for proc in first:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
    again = start(3)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]

    results = [np.load(tmp_path / f"f{i}.npz") for i in range(4)]
    for other in results[1:]:
        for key in ("log_mel", "start", "descriptors"):
            np.testing.assert_array_equal(other[key], results[0][key])
    base = Path(jit_cache.versions_dir(str(tmp_path / "numba")))
    assert (base / jit_cache.SEED).is_dir() and any((base / jit_cache.SEED).rglob("*.nbi"))
    # Private directories of finished processes are pruned by the next one; none is shared.
    assert not [p for p in base.iterdir() if p.name.startswith("staging-")]
