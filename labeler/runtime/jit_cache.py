"""A numba JIT cache that concurrent processes can never corrupt.

librosa compiles its numba functions with `cache=True`. Left alone, numba writes that cache into
librosa's own `__pycache__` (or into one shared `NUMBA_CACHE_DIR`), and numba's cache is safe for one
writer only: an index file and its data files are written separately, so fresh Ray workers compiling
at once can leave two versions of one function's cache, and every process that loads it then dies
with SIGSEGV. Contract: no two live processes ever write the same cache directory.

How:

- `configure()` runs at `import labeler` (labeler/__init__.py), so before librosa is imported in
  every process the project starts: the CLI, job drivers, Ray workers and Serve replicas, and the
  featuriser's crash-isolation child processes. It points `NUMBA_CACHE_DIR` at a directory private
  to this process, `<root>/<numba>-<librosa>/proc-<pid>`, so no two live processes ever write the
  same cache, and fills it from the seed below when there is one. A static environment variable (a runtime_env `env_vars` entry) cannot do this: every
  worker would get the same value.
- Private alone would make every worker compile librosa again (a cost bench/README.md records). So
  `ensure_compiled()` (called when a Featurizer is built) seeds the private directory
  from `<root>/<numba>-<librosa>/seed`, a complete cache published once per machine: the first
  process to need it takes an exclusive file lock, compiles by featurising a synthetic track, copies
  its private cache to a temporary directory and renames it to `seed` (atomic); processes waiting on
  the lock then hard-link the seed's files. numba replaces cache files by rename, so a process that
  later adds a specialisation to its private copy never alters the seed's files.
- `<root>` is `$MOOD_LABELER_NUMBA_ROOT`, else the `NUMBA_CACHE_DIR` the process started with, else
  `<cache home>/numba` (`$XDG_CACHE_HOME/mood-labeler/numba`, else `~/.cache/mood-labeler/numba`); it is
  exported so that child processes share it. Private directories of processes that no longer run are
  removed when the next seed copy is made.

Who may write the cache: only this user. numba unpickles its index files, so a cache file another user
planted would run code in every process. The root is therefore checked by
labeler.runtime.private_dir.private_dir() before anything in it is used (created 0700 if missing; refused if it
is a symbolic link, another user's, open to group or others, or below a directory others may change),
and the lock file is opened without following links. A refused root does not stop the process and is
never used: the cache is disabled for it, that is, NUMBA_CACHE_DIR points at a fresh private temporary
directory (mkdtemp, removed at exit) with no seed, so the process compiles on its own (slower, never
unsafe) and logs one warning saying which root was refused and why.

A forked child (os.fork after librosa is imported) would share its parent's directory: the project
never forks after importing librosa (the isolation child is a fresh interpreter).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import sys
import tempfile
import uuid
from importlib import metadata

from labeler.runtime.private_dir import UnsafePathError, cache_home, open_private, private_dir

log = logging.getLogger(__name__)

ROOT_VAR = "MOOD_LABELER_NUMBA_ROOT"
OWNER_VAR = "MOOD_LABELER_NUMBA_OWNER"  # the pid whose private directory NUMBA_CACHE_DIR names
SEED = "seed"
_PRIVATE_PREFIX = "proc-"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def versions_dir(root: str) -> str:
    """Caches of one numba and librosa build: an upgrade never loads another build's seed."""
    return os.path.join(root, f"numba{_version('numba')}-librosa{_version('librosa')}")


def default_root() -> str:
    """The per-user cache home's `numba` folder (labeler.runtime.private_dir.cache_home)."""
    return os.path.join(cache_home(), "numba")


_unshared: set[str] = set()  # private directories made because the root was refused: never seeded
_warned: set[str] = set()


def _checked_root(root: str) -> str | None:
    """`root` resolved, if it is private to this user (labeler.runtime.private_dir); None, with one warning, if not."""
    try:
        return private_dir(root, what="JIT cache root",
                           hint=f"compiling without a shared cache (set ${ROOT_VAR} to a directory of yours)")
    except OSError as exc:
        if root not in _warned:
            _warned.add(root)
            log.warning("%s", exc if isinstance(exc, UnsafePathError) else f"cannot use JIT cache root {root}: {exc}")
        return None


def configure(environ: os._Environ | dict | None = None, pid: int | None = None) -> str:
    """Point NUMBA_CACHE_DIR at this process's private directory (idempotent); return that directory."""
    environ = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    if environ.get(OWNER_VAR) == str(pid) and environ.get("NUMBA_CACHE_DIR"):
        return environ["NUMBA_CACHE_DIR"]
    root = environ.get(ROOT_VAR) or environ.get("NUMBA_CACHE_DIR") or default_root()
    environ[ROOT_VAR] = root
    checked = _checked_root(root)
    if checked is None:
        private = tempfile.mkdtemp(prefix="mood-labeler-numba-")  # this process's alone: no seed, never shared
        _unshared.add(private)
        atexit.register(shutil.rmtree, private, True)
    else:
        private = os.path.join(versions_dir(checked), f"{_PRIVATE_PREFIX}{pid}")
    environ["NUMBA_CACHE_DIR"] = private
    environ[OWNER_VAR] = str(pid)
    if environ is os.environ:
        if "numba.core.config" in sys.modules:
            sys.modules["numba.core.config"].reload_config()  # numba was imported first: make it read the new value
        seed = os.path.join(os.path.dirname(private), SEED)
        if checked is not None and os.path.isdir(seed):  # cheap (hard links): every process starts warm
            try:
                _link_tree(seed, private)
            except OSError:
                log.debug("could not seed %s from %s", private, seed, exc_info=True)
    return private


def _link_tree(src: str, dst: str) -> None:
    """Hard-link every file of src into dst (copy across devices); files dst already has are kept."""
    for folder, _dirs, files in os.walk(src):
        target = os.path.join(dst, os.path.relpath(folder, src))
        os.makedirs(target, exist_ok=True)
        for name in files:
            dest = os.path.join(target, name)
            if os.path.exists(dest):
                continue
            try:
                os.link(os.path.join(folder, name), dest)
            except FileExistsError:
                pass
            except OSError:
                shutil.copy2(os.path.join(folder, name), dest)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prune(base: str) -> None:
    """Remove private directories of processes that are gone (killed workers never clean up)."""
    for name in os.listdir(base):
        if name.startswith(_PRIVATE_PREFIX) and name[len(_PRIVATE_PREFIX):].isdigit():
            if not _alive(int(name[len(_PRIVATE_PREFIX):])):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)


@contextlib.contextmanager
def _locked(path: str):
    fd = open_private(path, os.O_RDWR)  # never follows a link planted at the lock's name
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_ensured: set[str] = set()


def ensure_compiled(warm_up) -> None:
    """Seed this process's private cache from the machine's seed, compiling and publishing it first if
    no process has; `warm_up()` must run every JIT-compiled function the caller will use. Once per process."""
    private = configure()
    if private in _ensured or private in _unshared:  # an unshared directory (refused root) has no seed
        return
    try:
        _seed(private, warm_up)
    except OSError:  # an unwritable or vanished cache root: numba still caches privately, only slower
        log.warning("could not seed the JIT cache %s", private, exc_info=True)
    _ensured.add(private)


def _seed(private: str, warm_up) -> None:
    base = os.path.dirname(private)
    seed = os.path.join(base, SEED)
    os.makedirs(base, mode=0o700, exist_ok=True)
    if not os.path.isdir(seed):
        with _locked(os.path.join(base, "compile.lock")):
            if not os.path.isdir(seed):
                log.info("compiling the JIT cache once for this machine into %s", seed)
                try:
                    warm_up()
                except Exception:  # noqa: BLE001 - no seed is slower, never wrong: each process compiles privately
                    log.warning("JIT warm-up failed; not publishing a seed cache", exc_info=True)
                    return
                staging = os.path.join(base, f"staging-{uuid.uuid4().hex[:8]}")
                _link_tree(private, staging)
                try:
                    os.rename(staging, seed)
                except OSError:  # another publisher won; keep theirs
                    shutil.rmtree(staging, ignore_errors=True)
    _link_tree(seed, private)
    _prune(base)
