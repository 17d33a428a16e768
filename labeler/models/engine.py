"""The CPU engine for frozen encoders: ONNX Runtime graphs built from the loaded model's own weights.

On CPU the frozen parts of a loaded model are its costliest work: MusiCNN's trunk, a Cnn6/Cnn10, and
the lyrics encoder (MiniLM, BERT, ...). `accelerate(model)` exports each of them with
`torch.onnx.export` (the TorchScript exporter, `dynamo=False`: it needs no extra packages and exports
in about a second) into memory, opens an ONNX Runtime session on the bytes, and installs it as the
part's `engine` hook (`MusicnnEncoder.trunk_engine`, `PannsCnn.engine`, `LyricsEncoder.engine`), which
the part then calls in eval mode instead of its PyTorch forward. Nothing is written to disk: the graph
is made from the weights the verified bundle just loaded, so a changed bundle can never meet a stale
graph, and no cache file has to be trusted.

Contract:

- `accelerate(model, threads)` -> the names of the parts it accelerated ([] when none). Never raises for
  an engine problem: without `onnxruntime`, or when a part fails to export, open, or reproduce its
  PyTorch output on a probe input within `PROBE_TOLERANCE`, that part keeps PyTorch and one log line says
  why. `threads` is ONNX Runtime's intra-op thread count (the caller's torch thread policy); its threads
  do not spin while idle, so a CPU share left to featurising is not burnt waiting.
- `clear(model)` removes every hook (PyTorch again).
- `engine_name(model)` -> "onnxruntime" when any part runs on it, else "torch".
- An `OrtFunction` takes and returns torch tensors on the CPU; it is picklable (the session is
  rebuilt from the graph's bytes on first use after unpickling).

GPU actors never call this: on CUDA the model stays PyTorch.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

PROBE_TOLERANCE = 1e-3  # max |onnx - torch| on the probe, relative to max(1, max |torch|)
_OPSET = 17


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


class OrtFunction:
    """torch tensors -> torch tensor through one ONNX Runtime session (CPU execution provider)."""

    def __init__(self, graph: bytes, input_names: Sequence[str], threads: int) -> None:
        self.graph = graph
        self.input_names = tuple(input_names)
        self.threads = max(1, int(threads))
        self._session = None

    @property
    def session(self):
        if self._session is None:
            import onnxruntime as ort  # noqa: PLC0415

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            self._session = ort.InferenceSession(self.graph, options, providers=["CPUExecutionProvider"])
        return self._session

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        feeds = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in zip(self.input_names, tensors)}
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def __getstate__(self) -> dict:
        return {"graph": self.graph, "input_names": self.input_names, "threads": self.threads, "_session": None}


def export_graph(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: Sequence[str],
                 dynamic_axes: dict[str, dict[int, str]]) -> bytes:
    """`module`'s forward on tensors like `example` as ONNX bytes (opset 17, constants folded)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes: one log line says what happened
        torch.onnx.export(module, example, buffer,  # type: ignore[arg-type]  # dynamo=False takes a BytesIO; typed as paths
                          input_names=list(input_names), output_names=["out"],
                          dynamic_axes=dynamic_axes, opset_version=_OPSET, dynamo=False)
    return buffer.getvalue()


class _Call(nn.Module):
    """A function of `network` as a module, for the exporter (the network's weights stay parameters)."""

    def __init__(self, network: nn.Module, fn: Callable) -> None:
        super().__init__()
        self.network = network
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _last_hidden_state(encoder: nn.Module) -> Callable:
    def run(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return run


def _parts(model: nn.Module):
    """(name, module, hook attribute, what to export, probe inputs, input names, dynamic axes) of every
    part of `model` an engine can run."""
    from labeler.models.audio_encoder import PannsCnn  # noqa: PLC0415
    from labeler.models.lyrics_encoder import LyricsEncoder  # noqa: PLC0415
    from labeler.musicnn.encoder import MusicnnEncoder  # noqa: PLC0415
    from labeler.musicnn.model import N_MELS, PATCH_FRAMES  # noqa: PLC0415

    for name, module in model.named_modules():
        if isinstance(module, MusicnnEncoder):
            probe = (torch.randn(3, PATCH_FRAMES, N_MELS),)
            yield (name, module, "trunk_engine", _Call(module.backbone, module.backbone.trunk), probe, ("log_mel",),
                   {"log_mel": {0: "patches"}})
        elif isinstance(module, PannsCnn):
            probe = (torch.randn(2, 160, module.config.n_mels),)
            yield name, module, "engine", module, probe, ("log_mel",), {"log_mel": {0: "batch", 1: "frames"}}
        elif isinstance(module, LyricsEncoder):
            encoder = module.encoder
            ids = torch.randint(0, int(encoder.config.vocab_size), (2, 24))
            mask = torch.ones_like(ids)
            mask[1, 17:] = 0
            yield (name, module, "engine", _Call(encoder, _last_hidden_state(encoder)),
                   (ids, mask), ("input_ids", "attention_mask"),
                   {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}})


def accelerate(model: nn.Module, threads: int) -> list[str]:
    """Run `model`'s frozen encoders through ONNX Runtime (see the module docstring); returns the parts'
    names. The model must be on the CPU and in eval mode."""
    if not onnxruntime_available():
        log.warning("onnxruntime is not installed: the encoders run on PyTorch")
        return []
    done = []
    for name, module, hook, target, probe, input_names, axes in list(_parts(model)):
        setattr(module, hook, None)
        modes = {m: m.training for m in target.modules()}  # the wrapper's and the network's
        try:
            target.eval()  # the graph is the network's inference; the exporter restores this mode after export
            engine = OrtFunction(export_graph(target, probe, input_names, axes), input_names, threads)
            _check(engine, target, probe, name)
        except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure: this part keeps PyTorch
            log.warning("%s runs on PyTorch: ONNX Runtime engine failed: %s: %s", name or type(module).__name__,
                        type(exc).__name__, str(exc)[:300])
            continue
        finally:
            for m, training in modes.items():
                m.training = training
        setattr(module, hook, engine)
        done.append(name or type(module).__name__)
    if done:
        log.info("ONNX Runtime runs %s", ", ".join(done))
    return done


def _check(engine: OrtFunction, target: nn.Module, probe: tuple[torch.Tensor, ...], name: str) -> None:
    """Raise unless the engine reproduces PyTorch on the probe and on a second batch shape (dynamic axes)."""
    other = tuple(t[:1, : max(8, t.shape[1] - 5)] if t.dim() == 2 else t[:1] for t in probe)
    for inputs in (probe, other):
        with torch.inference_mode():
            want = target(*inputs).float()
        got = engine(*inputs).float()
        if got.shape != want.shape:
            raise RuntimeError(f"{name}: output shape {tuple(got.shape)}, PyTorch gives {tuple(want.shape)}")
        err = float((got - want).abs().max()) if want.numel() else 0.0
        if not err <= PROBE_TOLERANCE * max(1.0, float(want.abs().max())):
            raise RuntimeError(f"{name}: output differs from PyTorch by {err:.3g}")


def clear(model: nn.Module) -> None:
    """Remove every engine hook: the parts run on PyTorch again."""
    for _name, module, hook, *_ in list(_parts(model)):
        setattr(module, hook, None)


def engine_name(model: nn.Module) -> str:
    """'onnxruntime' when any part of `model` runs on it, else 'torch'."""
    return "onnxruntime" if any(getattr(m, h, None) is not None for _n, m, h, *_ in _parts(model)) else "torch"
