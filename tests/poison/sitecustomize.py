"""Test-only crash injection: makes `labeler.audio.featurise_track` kill its own process with SIGSEGV when
it is given the file named by $MOOD_LABELER_TEST_POISON (a base name), in every Python process started
with this folder first on PYTHONPATH (CLI runs, Ray workers, the featuriser's isolation children, Serve
replicas). A real crash, as a segfaulting decoder or a corrupt JIT cache causes (issue #22), with no hook
in production code. Python imports only the first `sitecustomize` on the path, so this one also runs
tests/loopback/sitecustomize.py (which keeps the tests' Ray on loopback) and reuses its import hook.
"""

import importlib.util
import os
import signal
import sys

FOLDER = os.path.dirname(os.path.abspath(__file__))
ENV = "MOOD_LABELER_TEST_POISON"
# tests/conftest.py exports this name for the whole test session: a test that wants a crash names a file so.
POISON_FILE = "poison-segfault.wav"
PATCHED_MODULE = "labeler.audio.featurizer"


def _load_loopback():
    path = os.path.join(os.path.dirname(FOLDER), "loopback", "sitecustomize.py")
    spec = importlib.util.spec_from_file_location("_loopback_sitecustomize", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _patch(audio) -> None:
    original = audio.featurise_track
    if getattr(original, "poisoned", False):
        return

    def featurise_track(source, *args, **kwargs):
        if isinstance(source, str) and os.path.basename(source) == os.environ.get(ENV):
            os.kill(os.getpid(), signal.SIGSEGV)
        return original(source, *args, **kwargs)

    featurise_track.poisoned = True
    audio.featurise_track = featurise_track


def export(environ, file_name: str = POISON_FILE) -> None:
    """Make every Python process started with `environ` crash on `file_name` (this folder first on PYTHONPATH)."""
    environ[ENV] = file_name
    paths = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != FOLDER]
    environ["PYTHONPATH"] = os.pathsep.join([FOLDER, *paths])


_loopback = _load_loopback()
if os.environ.get(ENV):
    if PATCHED_MODULE in sys.modules:
        _patch(sys.modules[PATCHED_MODULE])
    elif not any(getattr(f, "module_name", None) == PATCHED_MODULE for f in sys.meta_path):
        sys.meta_path.insert(0, _loopback.PatchOnImport(PATCHED_MODULE, _patch))
