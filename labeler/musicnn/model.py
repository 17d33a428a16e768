"""MusiCNN (Pons & Serra 2019, "musicnn: pre-trained convolutional neural networks for music audio
tagging") in PyTorch, and the conversion of the wheel's TensorFlow checkpoints into it.

Architecture, from the paper and the checkpoint's layer shapes (MSD_musicnn / MTT_musicnn), on a
patch of 187 frames x 96 mel bins (3 s at 16 kHz, hop 256):

- input: one BatchNorm over the whole spectrogram (a single channel);
- front end, "musically motivated": two timbral convolutions spanning 7 frames x 40% / 70% of the
  mel axis (38 and 67 bins, 204 filters each, time padded by 3 on each side, no mel padding) and
  three temporal ones spanning 128 / 64 / 32 frames x 1 bin (51 filters each, TF "same" padding in
  time); each conv -> ReLU -> BatchNorm -> max over the mel axis; concatenated: 561 channels a frame;
- mid end: three 1-D convolutions over time (7 frames, 64 filters, zero padding 3) -> ReLU ->
  BatchNorm, the second and third with residual connections; the front end's 561 and the three
  64-channel outputs are concatenated densely (753 channels a frame);
- back end: max and mean over time, interleaved per channel as TF's flatten of [753, 2] orders them
  (1506), BatchNorm, Dense 200 + ReLU, BatchNorm (the "penultimate" embedding), Dense 50 (tags).

TF's batch normalisation uses epsilon 1e-3 (PyTorch's default is 1e-5): the port uses 1e-3.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PATCH_FRAMES = 187
N_MELS = 96
N_TAGS = 50
EMBEDDING_DIM = 200
_EPS = 1e-3
_TIMBRAL = ((7, 38), (7, 67))
_TEMPORAL = (128, 64, 32)
_FRONT_CHANNELS = 2 * 204 + 3 * 51  # 561
_MID_CHANNELS = 64
_DENSE_CHANNELS = _FRONT_CHANNELS + 3 * _MID_CHANNELS  # 753
TRUNK_DIM = 2 * _DENSE_CHANNELS  # 1506: the pooled features `trunk` gives each patch


def _bn(n: int, dims: int) -> nn.Module:
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(n, eps=_EPS)


def _bn_relu_max(z: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    """max over mel of BN(ReLU(z)), for z (b, c, t, mel) -> (b, c, t).

    In eval mode BN is a per-channel affine a*x + b and ReLU is monotonic, so the max over mel is
    a*relu(max z) + b where a >= 0 and a*relu(min z) + b where a < 0: the same numbers without running
    ReLU and BN over the whole (c, t, mel) map (most of the front end's memory traffic). In training
    mode (batch statistics) the plain order is used. `bn` is one of the front end's BatchNorm2d (`_bn`).
    """
    if bn.training:
        return bn(F.relu(z)).amax(dim=3)
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or bn.running_var is None:
        raise TypeError(f"expected a BatchNorm2d with running statistics, got {bn}")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    top = torch.where((scale >= 0).view(1, -1, 1), z.amax(dim=3), z.amin(dim=3))
    return F.relu(top) * scale.view(1, -1, 1) + shift.view(1, -1, 1)


class MusiCNN(nn.Module):
    """(batch, 187, 96) musicnn log-mel patches -> `forward` tags (logits) / `embed` 200-d penultimate."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_input = _bn(1, 2)
        self.timbral = nn.ModuleList(nn.Conv2d(1, 204, k) for k in _TIMBRAL)
        self.timbral_bn = nn.ModuleList(_bn(204, 2) for _ in _TIMBRAL)
        self.temporal = nn.ModuleList(nn.Conv2d(1, 51, (k, 1)) for k in _TEMPORAL)
        self.temporal_bn = nn.ModuleList(_bn(51, 2) for _ in _TEMPORAL)
        self.mid = nn.ModuleList(nn.Conv1d(_FRONT_CHANNELS if i == 0 else _MID_CHANNELS, _MID_CHANNELS, 7, padding=3)
                                 for i in range(3))
        self.mid_bn = nn.ModuleList(_bn(_MID_CHANNELS, 1) for _ in range(3))
        self.pool_bn = _bn(TRUNK_DIM, 1)
        self.dense = nn.Linear(TRUNK_DIM, EMBEDDING_DIM)
        self.dense_bn = _bn(EMBEDDING_DIM, 1)
        self.tags = nn.Linear(EMBEDDING_DIM, N_TAGS)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 1506) features of each patch: everything up to the temporal max and mean pooling.

        The part a fine-tuned MusiCNN branch keeps frozen and caches once per song (`top` learns).
        The order is TF's flatten of [753, 2]: max and mean interleaved per channel.
        """
        if x.dim() != 3 or x.shape[2] != N_MELS or x.shape[1] < max(_TEMPORAL) // 2:
            raise ValueError(f"MusiCNN expects patches (batch, frames, {N_MELS}) of at least 64 frames, got {tuple(x.shape)}")
        x = self.bn_input(x.float().unsqueeze(1))                   # (b, 1, t, 96)
        front = []
        padded = F.pad(x, (0, 0, 3, 3))                            # time only
        for conv, bn in zip(self.timbral, self.timbral_bn):
            front.append(_bn_relu_max(conv(padded), bn))           # (b, 204, t)
        for k, conv, bn in zip(_TEMPORAL, self.temporal, self.temporal_bn):
            same = F.pad(x, (0, 0, (k - 1) // 2, k - 1 - (k - 1) // 2))  # TF "same": the extra frame goes after
            front.append(_bn_relu_max(conv(same), bn))             # (b, 51, t)
        h = torch.cat(front, dim=1)                                 # (b, 561, t)
        outs = [h]
        y = self.mid_bn[0](F.relu(self.mid[0](h)))
        outs.append(y)
        for conv, bn in zip(self.mid[1:], self.mid_bn[1:]):
            y = bn(F.relu(conv(y))) + y
            outs.append(y)
        dense = torch.cat(outs, dim=1)                              # (b, 753, t)
        return torch.stack([dense.amax(dim=2), dense.mean(dim=2)], dim=2).flatten(1)  # TF flatten of [753, 2]

    def top(self, pooled: torch.Tensor, dense: nn.Linear | None = None) -> torch.Tensor:
        """The 200-d penultimate embedding from `trunk`'s features; `dense`: a fine-tuned copy of `self.dense`."""
        return self.dense_bn(F.relu((dense or self.dense)(self.pool_bn(pooled))))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intermediate outputs: 'max_pool' (753), 'mean_pool' (753), 'penultimate' (200), 'logits' (50)."""
        pooled = self.trunk(x)
        pairs = pooled.view(pooled.shape[0], _DENSE_CHANNELS, 2)
        penultimate = self.top(pooled)
        return {"max_pool": pairs[..., 0], "mean_pool": pairs[..., 1], "penultimate": penultimate,
                "logits": self.tags(penultimate)}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 200-d penultimate embedding of each patch (what the mood head pools)."""
        return self.features(x)["penultimate"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tag logits (sigmoid them for musicnn's taggram)."""
        return self.features(x)["logits"]


# ----------------------------------------------------------------------------- TF checkpoint -> torch


def _bn_names(i: int) -> str:
    return "batch_normalization" + (f"_{i}" if i else "")


def _conv_names(i: int) -> str:
    return "conv2d" + (f"_{i}" if i else "")


def tf_variable_map() -> dict[str, tuple[str, str]]:
    """torch parameter/buffer name -> (TF variable name, conversion), in TF's layer creation order."""
    mapping: dict[str, tuple[str, str]] = {}

    def bn(torch_name: str, tf_index: int) -> None:
        tf = _bn_names(tf_index)
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            mapping[f"{torch_name}.{ours}"] = (f"{tf}/{theirs}", "vector")

    def conv(torch_name: str, tf_index: int, kind: str) -> None:
        mapping[f"{torch_name}.weight"] = (f"{_conv_names(tf_index)}/kernel", kind)
        mapping[f"{torch_name}.bias"] = (f"{_conv_names(tf_index)}/bias", "vector")

    bn("bn_input", 0)
    for i in range(2):
        conv(f"timbral.{i}", i, "conv2d")
        bn(f"timbral_bn.{i}", 1 + i)
    for i in range(3):
        conv(f"temporal.{i}", 2 + i, "conv2d")
        bn(f"temporal_bn.{i}", 3 + i)
    for i in range(3):
        conv(f"mid.{i}", 5 + i, "conv1d")
        bn(f"mid_bn.{i}", 6 + i)
    bn("pool_bn", 9)
    mapping["dense.weight"], mapping["dense.bias"] = ("dense/kernel", "dense"), ("dense/bias", "vector")
    bn("dense_bn", 10)
    mapping["tags.weight"], mapping["tags.bias"] = ("dense_1/kernel", "dense"), ("dense_1/bias", "vector")
    return mapping


def _convert(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv2d":   # TF (kh, kw, in, out) -> torch (out, in, kh, kw)
        return value.transpose(3, 2, 0, 1)
    if kind == "conv1d":   # TF (7, C, 1, out): a 2-D conv spanning all channels -> torch Conv1d (out, C, 7)
        return value[:, :, 0, :].transpose(2, 1, 0)
    if kind == "dense":    # TF (in, out) -> torch (out, in)
        return value.T
    return value


def state_dict_from_tf(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A MusiCNN state dict from a checkpoint's variables; ValueError naming any missing or misshapen one."""
    reference = MusiCNN().state_dict()
    out: dict[str, torch.Tensor] = {}
    problems = []
    for name, (tf_name, kind) in tf_variable_map().items():
        if tf_name not in variables:
            problems.append(f"{tf_name} missing")
            continue
        value = np.ascontiguousarray(_convert(np.asarray(variables[tf_name], dtype=np.float32), kind))
        if tuple(value.shape) != tuple(reference[name].shape):
            problems.append(f"{tf_name} {value.shape} does not fit {name} {tuple(reference[name].shape)}")
            continue
        out[name] = torch.from_numpy(value.copy())
    if problems:
        raise ValueError("not a musicnn checkpoint: " + "; ".join(problems))
    for name, tensor in reference.items():  # num_batches_tracked: not in TF, unused in eval
        out.setdefault(name, tensor)
    return out


def load_musicnn(model_id: str = "MSD_musicnn", root=None) -> MusiCNN:
    """MusiCNN with `model_id`'s weights from the wheel's checkpoint (sha256-checked), in eval mode."""
    from labeler.musicnn.checkpoint import read_checkpoint  # noqa: PLC0415
    from labeler.musicnn.wheel import checkpoint_prefix  # noqa: PLC0415

    prefix = checkpoint_prefix(model_id, root)
    names = sorted({tf_name for tf_name, _ in tf_variable_map().values()})
    model = MusiCNN()
    model.load_state_dict(state_dict_from_tf(read_checkpoint(prefix, names)))
    return model.eval()
