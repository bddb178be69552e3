"""Multi-layer perceptrons (the Gaussian actors built on them live in `rlpt.nets.policies`)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}


class MLP(nn.Sequential):
    """`in_dim -> hidden... -> out_dim`, activation between layers, none after the last."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "relu"):
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), act()]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim
