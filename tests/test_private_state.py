"""Per-user private state (security issue #30): what another user of the machine can plant is never used.

Each test plays the attacker on a shared machine: a JIT cache root or a log directory pre-created by
another uid or left open to everyone (refused: the cache is disabled for the process, the command fails
in one line), a symbolic link at a log file's or the JIT lock file's predictable name (not followed, its
target untouched), and a `labeler/` package planted in the working directory of the isolation child
(not imported). Files and directories the project creates are 0600 and 0700.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from jobs import cli
from labeler.runtime import jit_cache
from labeler.runtime import session as ses
from labeler.runtime.isolate import ChildProcess, WorkerCrash
from labeler.runtime.private_dir import UnsafePathError, open_private, private_dir

REPO = Path(__file__).resolve().parents[1]
OTHER_UID = 12345
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another uid needs root")


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _planted(root: Path, owner: int | None, mode: int) -> Path:
    """A directory as another user (or a careless umask) leaves it: `mode`, owned by `owner`."""
    root.mkdir(parents=True)
    os.chmod(root, mode)
    if owner is not None:
        os.chown(root, owner, -1)
    return root


# --------------------------------------------------------------------------------------------------
# labeler.runtime.private_dir itself


def test_a_missing_directory_is_created_private_and_returned_resolved(tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    made = private_dir(tmp_path / "link" / "a" / "b")  # a link above the leaf is resolved, not refused
    assert made == str(tmp_path / "real" / "a" / "b") and _mode(made) == 0o700


@needs_root
def test_private_dir_refuses_what_another_user_could_control(tmp_path):
    refusals = {
        "belongs to": _planted(tmp_path / "theirs", OTHER_UID, 0o700),
        "mode 0777": _planted(tmp_path / "open", None, 0o777),
        "mode 0750": _planted(tmp_path / "group", None, 0o750),
    }
    (tmp_path / "link").symlink_to(_planted(tmp_path / "target", None, 0o700))
    refusals["symbolic link"] = tmp_path / "link"
    shared = _planted(tmp_path / "shared", None, 0o777)  # writable by all, no sticky bit: mine can be swapped
    refusals["may write to"] = _planted(shared / "mine", None, 0o700)
    above = _planted(tmp_path / "their-parent", OTHER_UID, 0o755)
    refusals["above it belongs to"] = _planted(above / "mine", None, 0o700)
    for reason, path in refusals.items():
        with pytest.raises(UnsafePathError, match=reason) as caught:
            private_dir(path, what="test directory")
        assert str(caught.value).startswith(f"refusing test directory {path}: ") and "\n" not in str(caught.value)
    sticky = _planted(tmp_path / "sticky", None, 0o1777)  # like /tmp: others may not rename what is mine
    assert private_dir(sticky / "mine") == str(sticky / "mine")


def test_open_private_creates_0600_and_never_follows_a_link(tmp_path):
    os.close(open_private(tmp_path / "new.log"))
    assert _mode(tmp_path / "new.log") == 0o600
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "planted.log").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        open_private(tmp_path / "planted.log")
    assert victim.read_text() == "precious\n"


# --------------------------------------------------------------------------------------------------
# the numba JIT cache


_SHOW_CACHE = "import labeler, os; print(os.environ['NUMBA_CACHE_DIR'])"


def _planted_cache(root: Path) -> Path:
    """The attack of issue #30: a seed cache in a root the victim's processes will use."""
    seed = Path(jit_cache.versions_dir(str(root))) / jit_cache.SEED
    seed.mkdir(parents=True)
    (seed / "planted.nbi").write_bytes(b"a pickle that runs code")
    return seed


def _import_labeler(tmp_path: Path, root: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", jit_cache.OWNER_VAR)}
    env.update({jit_cache.ROOT_VAR: str(root), "PYTHONPATH": str(REPO)})
    return subprocess.run([sys.executable, "-c", _SHOW_CACHE], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=True)


@needs_root
@pytest.mark.parametrize("owner, mode", [(OTHER_UID, 0o777), (OTHER_UID, 0o700), (None, 0o777)],
                         ids=["other-uid-open", "other-uid-private", "mine-world-writable"])
def test_a_planted_cache_root_is_not_used(tmp_path, owner, mode):
    root = tmp_path / "shared-numba"
    seed = _planted_cache(root)
    os.chmod(root, mode)
    if owner is not None:
        for folder in (root, *root.rglob("*")):
            os.chown(folder, owner, -1)
    done = _import_labeler(tmp_path, root)
    used = done.stdout.strip()
    assert not used.startswith(str(root)), used  # the process's cache is elsewhere: a fresh private directory
    assert not os.path.exists(os.path.join(used, "planted.nbi"))
    assert sorted(p.name for p in seed.parent.iterdir()) == [jit_cache.SEED]  # no proc-<pid> linked from the seed
    assert "refusing JIT cache root" in done.stderr and str(root) in done.stderr
    assert not os.path.exists(used)  # removed at exit


def test_a_link_at_the_lock_files_name_is_not_followed(tmp_path):
    base = Path(private_dir(tmp_path / "numba"))
    victim = tmp_path / "elsewhere" / "created-by-the-lock"
    victim.parent.mkdir()
    (base / "compile.lock").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symbolic link"), jit_cache._locked(str(base / "compile.lock")):
        pass
    assert not victim.exists()


# --------------------------------------------------------------------------------------------------
# session logs, through the real command line


@pytest.fixture()
def quiet_synth(monkeypatch):
    """`labeler synth` that does nothing: the command's session (its log file) is what is tested."""
    import jobs.commands.synth

    monkeypatch.setattr(jobs.commands.synth, "run_cli", lambda args: 0)
    return ["synth", "--output", "unused"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@needs_root
@pytest.mark.parametrize("owner, mode", [(OTHER_UID, 0o1777), (None, 0o777)], ids=["other-uid", "world-writable"])
def test_a_planted_log_directory_is_refused_in_one_line(tmp_path, monkeypatch, capsys, quiet_synth, owner, mode):
    planted = _planted(tmp_path / "mood-labeler-logs", owner, mode)
    monkeypatch.setenv(ses.LOG_DIR_ENV, str(planted))
    assert cli.main(quiet_synth) == 2
    line = _one_line(capsys)
    assert line.startswith(f"labeler synth: error: refusing log directory {planted}: ") and ses.LOG_DIR_ENV in line
    assert not list(planted.iterdir())


def test_a_link_at_the_log_files_name_is_not_followed(tmp_path, monkeypatch, capsys, quiet_synth):
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2030, 1, 2, 3, 4, 5)

    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    monkeypatch.setenv(ses.LOG_DIR_ENV, str(logs))
    monkeypatch.setattr(ses, "datetime", Frozen)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (logs / f"synth-20300102-030405-{os.getpid()}.log").symlink_to(victim)  # the predictable name
    assert cli.main(quiet_synth) == 2
    assert "symbolic link" in _one_line(capsys)
    assert victim.read_text() == "precious\n"


def test_logs_default_to_a_private_state_directory(tmp_path, monkeypatch, quiet_synth):
    monkeypatch.delenv(ses.LOG_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert cli.main(quiet_synth) == 0
    logs = tmp_path / "state" / "mood-labeler" / "logs"
    [log_file] = logs.glob("synth-*.log")
    assert _mode(logs) == 0o700 and _mode(log_file) == 0o600


# --------------------------------------------------------------------------------------------------
# the isolation child


def test_the_isolation_child_never_imports_from_its_working_directory(tmp_path, monkeypatch):
    marker = tmp_path / "planted-code-ran"
    planted = tmp_path / "cwd" / "labeler"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(planted.parent)
    child = ChildProcess()
    try:
        with pytest.raises(RuntimeError, match="not callable") as caught:  # the real labeler.runtime.isolate answered
            child.call("builtins:dict", {}, {})
        assert not isinstance(caught.value, WorkerCrash)
    finally:
        child.close()
    assert not marker.exists()
