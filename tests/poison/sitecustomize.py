"""Test-only failure injection, in every Python process started with this folder first on PYTHONPATH (CLI
runs, Ray workers, the featuriser's isolation children, Serve replicas), with no hook in production code:

- `labeler.audio.featurise_track` kills its own process with SIGSEGV when it is given the file named by
  $MOOD_LABELER_TEST_POISON (a base name): a real crash, as a segfaulting decoder or a corrupt JIT cache
  causes (issue #22).
- A Ray Train worker raises once when it reports the epoch written in the file named by
  $MOOD_LABELER_TEST_TRAIN_FAILURE (armed by `train_fails_once`), so the resume-from-checkpoint test sees a
  real worker failure. It wraps `ray.train.report` because that is the one per-epoch call whose arguments
  carry the epoch (the loop reports `{"epoch": ...}`); the epoch's checkpoint is then never written.
- A labelling Predictor actor kills its own process with SIGKILL on its first batch while the file named by
  $MOOD_LABELER_TEST_PREDICTOR_DEATH exists (armed by `predictor_dies_once`): a real actor death, as a lost
  node or an out-of-memory kill causes, so the driver's resume (labeler.label_job.resume) meets Ray's own error.
 Python imports only the first `sitecustomize` on the path, so this one also runs
tests/loopback/sitecustomize.py (which keeps the tests' Ray on loopback) and reuses its import hook.
"""

import contextlib
import importlib.util
import os
import signal
import sys
import tempfile
from pathlib import Path

FOLDER = os.path.dirname(os.path.abspath(__file__))
ENV = "MOOD_LABELER_TEST_POISON"
# tests/conftest.py exports this name for the whole test session: a test that wants a crash names a file so.
POISON_FILE = "poison-segfault.wav"
PATCHED_MODULE = "labeler.audio.featurizer"
TRAIN_ENV = "MOOD_LABELER_TEST_TRAIN_FAILURE"
TRAIN_MODULE = "ray.train"
PREDICTOR_ENV = "MOOD_LABELER_TEST_PREDICTOR_DEATH"
PREDICTOR_MODULE = "labeler.inference.predict"


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


def _fires(arm: str, epoch=None) -> bool:
    """True for exactly one caller: the armed epoch (any, when None) is reached and this process disarmed it
    (an atomic rename)."""
    try:
        if epoch is not None and int(Path(arm).read_text()) != int(epoch):
            return False
        os.rename(arm, arm + ".fired")
    except (FileNotFoundError, ValueError):
        return False
    return True


def _patch_report(ray_train) -> None:
    original = ray_train.report
    if getattr(original, "poisoned", False):
        return

    def report(metrics, *args, **kwargs):
        arm = os.environ.get(TRAIN_ENV)
        if arm and isinstance(metrics, dict) and metrics.get("epoch") is not None and _fires(arm, metrics["epoch"]):
            raise RuntimeError(f"injected failure at epoch {metrics['epoch']} (fault-tolerance test)")
        return original(metrics, *args, **kwargs)

    report.poisoned = True
    ray_train.report = report


def _patch_predictor(predict) -> None:
    original = predict.Predictor.__call__
    if getattr(original, "poisoned", False):
        return

    def __call__(self, *args, **kwargs):
        arm = os.environ.get(PREDICTOR_ENV)
        if arm and _fires(arm):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    __call__.poisoned = True
    predict.Predictor.__call__ = __call__


@contextlib.contextmanager
def _armed(env: str, content: str):
    """Arm the failure named by $env for the `with` block; yields the file that exists once it has fired."""
    arm = Path(os.environ[env])
    fired = Path(f"{arm}.fired")
    fired.unlink(missing_ok=True)
    arm.parent.mkdir(parents=True, exist_ok=True)
    arm.write_text(content)
    try:
        yield fired
    finally:
        arm.unlink(missing_ok=True)


def train_fails_once(at_epoch: int):
    """Arm the training failure for the `with` block; yields the file that exists once a worker has failed."""
    return _armed(TRAIN_ENV, str(at_epoch))


def predictor_dies_once():
    """Arm the Predictor actor's death for the `with` block; yields the file that exists once one has died."""
    return _armed(PREDICTOR_ENV, "armed")


def export(environ, file_name: str = POISON_FILE) -> None:
    """Make every Python process started with `environ` crash on `file_name` and honour `train_fails_once` and
    `predictor_dies_once` (this folder first on PYTHONPATH; the arming file is per exporting process, so sessions do not meet)."""
    environ[ENV] = file_name
    environ.setdefault(TRAIN_ENV, os.path.join(tempfile.gettempdir(), f"mood-labeler-train-failure-{os.getpid()}"))
    environ.setdefault(PREDICTOR_ENV, os.path.join(tempfile.gettempdir(), f"mood-labeler-predictor-death-{os.getpid()}"))
    paths = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != FOLDER]
    environ["PYTHONPATH"] = os.pathsep.join([FOLDER, *paths])


def _install(module_name: str, patch) -> None:
    """Patch `module_name` now if it is loaded, else when it is imported; once."""
    if module_name in sys.modules:
        patch(sys.modules[module_name])
    elif not any(getattr(f, "module_name", None) == module_name for f in sys.meta_path):
        sys.meta_path.insert(0, _loopback.PatchOnImport(module_name, patch))


_loopback = _load_loopback()
if os.environ.get(ENV):
    _install(PATCHED_MODULE, _patch)
if os.environ.get(TRAIN_ENV):
    _install(TRAIN_MODULE, _patch_report)
if os.environ.get(PREDICTOR_ENV):
    _install(PREDICTOR_MODULE, _patch_predictor)
