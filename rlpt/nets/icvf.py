"""Intention-conditioned value functions (ICVF, Ghosh et al., ICML 2023) and the encoder checkpoint format.

The ICVF `V(s, s+, z)` estimates how soon (discounted) a state `s+` is reached from `s` when acting to reach
the intention `z`. The multilinear form (dibyaghosh/icvf_release, `MultilinearVF`) is

    phi = MLP_phi(f(s)),  psi = MLP_psi(f(s+)),  T = MLP_T(MLP_psi(f(z)))           # all d-dim, activated
    V(s, s+, z) = sum_i [A (T * phi)]_i [B (T * psi)]_i                              # A, B: d x d linear

a low-rank stand-in for `phi(s)^T T(z) psi(s+)`; `f` is a shared encoder (a `ResNetEncoder` on pixels, a
`FlatEncoder` on states) and an ensemble of such heads shares it. After pretraining, `f` (and `phi`) is the
representation downstream agents start from.

Encoders travel between stages as a folder holding `encoder.json` (class, constructor kwargs, `out_dim`, and
where the weights are) plus safetensors weights: `save_encoder` writes one, `load_encoder` rebuilds the module
anywhere (agents load it through their `pretrained` config key without importing any pretraining code).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlpt.errors import CheckpointError, ConfigError
from rlpt.utils import checkpoint_folder, replace_dir, resolve_device, to_jsonable

ENCODER_FILE = "encoder.json"


# ============================================================================================ heads
def _mlp(in_dim: int, hidden: Sequence[int], layer_norm: bool) -> nn.Sequential:
    """`in_dim -> hidden...`, activated after every layer (icvf_release's `activate_final=True`).

    Plain: Linear + ReLU (jaxrl_m's MLP); `layer_norm`: Linear + GELU + LayerNorm (icvf_release's LayerNormMLP)."""
    layers: list[nn.Module] = []
    for a, b in zip([in_dim, *hidden][:-1], hidden, strict=True):
        layers.append(nn.Linear(a, b))
        layers += [nn.GELU(), nn.LayerNorm(b)] if layer_norm else [nn.ReLU()]
    return nn.Sequential(*layers)


class MultilinearHead(nn.Module):
    """One multilinear ICVF on encoder features: `forward(f_s, f_g, f_z) (B, F) each -> V (B,)`."""

    def __init__(self, feat_dim: int, hidden: Sequence[int] = (256, 256), layer_norm: bool = False):
        super().__init__()
        if not hidden:
            raise ConfigError("MultilinearHead: hidden must name at least one layer size")
        d = int(hidden[-1])
        self.phi_net = _mlp(feat_dim, hidden, layer_norm)
        self.psi_net = _mlp(feat_dim, hidden, layer_norm)
        self.t_net = _mlp(d, hidden, layer_norm)  # on psi(z), as in the reference
        self.matrix_a = nn.Linear(d, d)
        self.matrix_b = nn.Linear(d, d)
        self.dim = d

    def phi(self, f_s: torch.Tensor) -> torch.Tensor:
        """The state representation phi(s), (B, d)."""
        return self.phi_net(f_s)

    def info(self, f_s: torch.Tensor, f_g: torch.Tensor, f_z: torch.Tensor) -> dict[str, torch.Tensor]:
        """`v` (B,) and the intermediate `phi`, `psi`, `tz` (B, d)."""
        phi, psi = self.phi_net(f_s), self.psi_net(f_g)
        tz = self.t_net(self.psi_net(f_z))
        v = (self.matrix_a(tz * phi) * self.matrix_b(tz * psi)).sum(-1)
        return {"v": v, "phi": phi, "psi": psi, "tz": tz}

    def forward(self, f_s: torch.Tensor, f_g: torch.Tensor, f_z: torch.Tensor) -> torch.Tensor:
        return self.info(f_s, f_g, f_z)["v"]


class ICVFValue(nn.Module):
    """An encoder shared by `n_ensemble` multilinear heads: `forward(s, g, z) -> V (n_ensemble, B)`.

    Observations go through `encoder` (images `(B, 3, H, W)` / states `(B, D)`); `values(f_s, f_g, f_z)` takes
    features already encoded, so a training step can encode every frame of a batch in one call.
    """

    def __init__(self, encoder: nn.Module, hidden: Sequence[int] = (256, 256), n_ensemble: int = 2,
                 layer_norm: bool = False):
        super().__init__()
        if not isinstance(getattr(encoder, "out_dim", None), int):
            raise ConfigError(f"ICVFValue: the encoder ({type(encoder).__name__}) needs an integer `out_dim`")
        if n_ensemble < 1:
            raise ConfigError(f"ICVFValue: n_ensemble must be >= 1, got {n_ensemble}")
        self.encoder = encoder
        self.heads = nn.ModuleList(MultilinearHead(encoder.out_dim, hidden, layer_norm) for _ in range(n_ensemble))

    def values(self, f_s: torch.Tensor, f_g: torch.Tensor, f_z: torch.Tensor) -> torch.Tensor:
        """V of every ensemble member from features (B, F) -> (n_ensemble, B)."""
        return torch.stack([h(f_s, f_g, f_z) for h in self.heads])

    def forward(self, s: torch.Tensor, g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        n = s.shape[0]
        f = self.encoder(torch.cat([s, g, z]))  # one encoder call (one normalisation batch) for all three
        return self.values(f[:n], f[n:2 * n], f[2 * n:])

    def phi(self, s: torch.Tensor) -> torch.Tensor:
        """phi(s) of the first head, (B, d): ICVF's state representation."""
        return self.heads[0].phi(self.encoder(s))


# ============================================================================================ encoders
class FlatEncoder(nn.Module):
    """Encoder for vector states: flatten, then an optional MLP (`hidden=()` is the identity).

    `forward((B, *shape)) -> (B, out_dim)`; the ICVF sanity checks use it with one-hot states."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (), activation: str = "relu"):
        super().__init__()
        from rlpt.nets.mlp import ACTIVATIONS

        if activation not in ACTIVATIONS:
            raise ConfigError(f"FlatEncoder: unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        for a, b in zip([in_dim, *hidden][:-1], hidden, strict=True):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        self.net = nn.Sequential(*layers)
        self.kwargs = {"in_dim": int(in_dim), "hidden": [int(h) for h in hidden], "activation": activation}
        self.in_dim = int(in_dim)
        self.out_dim = int(hidden[-1]) if hidden else int(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1).float())


def _resnet_encoder(**kwargs: Any) -> nn.Module:
    from rlpt.nets.conv import ResNetEncoder

    return ResNetEncoder(**kwargs)


#: Encoder classes an `encoder.json` may name (nothing else is ever constructed from a file).
ENCODER_CLASSES: dict[str, Callable[..., nn.Module]] = {"ResNetEncoder": _resnet_encoder, "FlatEncoder": FlatEncoder}


def build_encoder(class_name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Construct a registered encoder class from its constructor kwargs (weights freshly initialised)."""
    if class_name not in ENCODER_CLASSES:
        raise ConfigError(f"unknown encoder class {class_name!r}; expected one of {sorted(ENCODER_CLASSES)}")
    try:
        enc = ENCODER_CLASSES[class_name](**(kwargs or {}))
    except TypeError as e:
        raise ConfigError(f"{class_name}: bad constructor arguments {kwargs}: {e}") from None
    if not isinstance(getattr(enc, "out_dim", None), int):
        raise ConfigError(f"{class_name} has no integer `out_dim`")
    return enc


def encoder_spec(class_name: str, kwargs: dict[str, Any], out_dim: int, weights: str = "encoder.safetensors",
                 prefix: str = "", **extra: Any) -> dict[str, Any]:
    """The content of an `encoder.json`: how to rebuild the encoder and where its weights are."""
    return {"format": "rlpt-encoder-v1", "class": class_name, "kwargs": to_jsonable(kwargs),
            "out_dim": int(out_dim), "weights": weights, "prefix": prefix, **to_jsonable(extra)}


def save_encoder(encoder: nn.Module, path: str | os.PathLike, class_name: str | None = None,
                 kwargs: dict[str, Any] | None = None, **extra: Any) -> Path:
    """Write `encoder` as a standalone folder (`encoder.json` + `encoder.safetensors`), atomically.

    `class_name`/`kwargs` (default: the encoder's class name and its `kwargs` attribute, which `ResNetEncoder`
    and `FlatEncoder` keep) must rebuild the same architecture (`build_encoder(class_name, kwargs)`)."""
    path = Path(path)
    class_name = class_name or type(encoder).__name__
    if kwargs is None:
        kwargs = getattr(encoder, "kwargs", None)
        if not isinstance(kwargs, dict):
            raise ConfigError(f"save_encoder: {class_name} keeps no `kwargs`; pass its constructor kwargs")
    probe = build_encoder(class_name, kwargs)
    if set(probe.state_dict()) != set(encoder.state_dict()):
        raise ConfigError(f"save_encoder: {class_name}({kwargs}) does not rebuild this encoder's architecture")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()},
                  str(tmp / "encoder.safetensors"))
        spec = encoder_spec(class_name, kwargs, encoder.out_dim, **extra)
        (tmp / ENCODER_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def encoder_folder(path: str | os.PathLike) -> Path:
    """The folder holding `encoder.json`: `path` itself, else a pretraining run folder's latest checkpoint."""
    path = Path(path)
    folder = checkpoint_folder(path, ENCODER_FILE)
    if folder is not None:
        return folder
    if not path.exists():
        raise CheckpointError(f"encoder folder {path} does not exist")
    raise CheckpointError(f"{path}: no {ENCODER_FILE} here; expected an encoder folder written by "
                          "`rlpt pretrain vptr` or rlpt.nets.icvf.save_encoder")


def read_encoder_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The `encoder.json` of an encoder folder (or of a pretraining run folder), checked."""
    f = encoder_folder(path) / ENCODER_FILE
    try:
        spec = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None
    for key in ("class", "kwargs", "out_dim", "weights"):
        if key not in spec:
            raise CheckpointError(f"{f}: key '{key}' is missing")
    return spec


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the encoder saved in folder `path` with its weights; returns an `nn.Module` with `out_dim`."""
    folder = encoder_folder(path)
    spec = read_encoder_spec(folder)
    encoder = build_encoder(spec["class"], spec["kwargs"])  # only registered classes are ever built
    weights = folder / spec["weights"]
    if not weights.exists():
        raise CheckpointError(f"{folder}: encoder weights {spec['weights']} are missing (incomplete checkpoint)")
    prefix = spec.get("prefix", "")
    tensors = {k[len(prefix):]: v for k, v in load_file(str(weights)).items() if k.startswith(prefix)}
    try:
        encoder.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: weights do not fit {spec['class']}({spec['kwargs']}): {e}") from None
    if encoder.out_dim != int(spec["out_dim"]):
        raise CheckpointError(f"{folder}: {spec['class']} rebuilt with out_dim {encoder.out_dim}, the file says "
                              f"{spec['out_dim']}")
    return encoder.to(resolve_device(device))
