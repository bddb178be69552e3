"""Image encoders for agents, built in one place: an encoder given by the caller, a pretrained encoder folder
(`rlpt pretrain vptr` output or `rlpt.nets.icvf.save_encoder`), or a fresh `ResNetEncoder` (scratch).

Cal-QL and Uni-O4 take their encoders from here, so the checks (an integer `out_dim`, the image size the encoder
was built for, frozen or fine-tuned) are the same for both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlpt.errors import ConfigError


def build_image_encoder(owner: str, obs_shape: tuple[int, ...], encoder: nn.Module | None = None,
                        pretrained: str | None = None, encoder_config: dict[str, Any] | None = None,
                        scratch: bool = True, freeze: bool = False,
                        device: str | torch.device = "cpu") -> nn.Module:
    """The encoder for image observations `obs_shape` ((S, S, C), or (k, S, S, C) frame stacks): `encoder` if
    given, else the one saved in folder `pretrained`, else (when `scratch`) a fresh
    `ResNetEncoder(image_size=S, **encoder_config)`. `freeze`: no gradients, eval mode. `owner` names the agent in
    errors."""
    size = obs_shape[-2]
    if encoder is None and pretrained is not None:
        from rlpt.nets.icvf import load_encoder

        encoder = load_encoder(pretrained)
    elif encoder is None and scratch:
        from rlpt.nets.conv import ResNetEncoder

        try:
            encoder = ResNetEncoder(**{**(encoder_config or {}), "image_size": size})
        except TypeError as e:
            raise ConfigError(f"{owner}: encoder_config {encoder_config} is not ResNetEncoder kwargs: {e}") from None
    elif encoder is None:
        raise ConfigError(f"{owner} on image observations {obs_shape} needs a pretrained encoder: "
                          "config.create(obs_space, act_space, encoder=enc) or config pretrained=FOLDER")
    if not isinstance(getattr(encoder, "out_dim", None), int):
        raise ConfigError(f"{owner}: the encoder ({type(encoder).__name__}) needs an integer `out_dim` attribute")
    built_for = getattr(encoder, "image_size", size)
    if built_for != size:
        where = f" (pretrained={pretrained})" if pretrained else ""
        raise ConfigError(f"{owner}: the encoder{where} takes {built_for}x{built_for} images but observations are "
                          f"{size}x{size}; pretrain at image_size {size} or change the env's image_size")
    encoder = encoder.to(device)
    if freeze:
        encoder.requires_grad_(False).eval()
    return encoder


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """Image batches as encoders take them: (B, H, W, C) -> (B, C, H, W); frame stacks (B, k, H, W, C) ->
    (B, k*C, H, W); already channels-first batches pass through."""
    if x.dim() == 5:
        b, k, h, w, c = x.shape
        return x.permute(0, 1, 4, 2, 3).reshape(b, k * c, h, w)
    if x.dim() == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return x.permute(0, 3, 1, 2)
    return x


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's augmentation: shift each image of (B, H, W, C) by up to `pad` pixels, edges replicated."""
    b, h, w, _ = x.shape
    d = torch.randint(-pad, pad + 1, (2, b, 1), generator=generator, device=x.device)
    rows = (torch.arange(h, device=x.device)[None] + d[0]).clamp(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=x.device)[None] + d[1]).clamp(0, w - 1)  # (B, W)
    return x[torch.arange(b, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]


class ImageFeatures(nn.Module):
    """Images -> features for an agent's actor and critics: an encoder (frozen or trained), then a trunk
    (Linear -> LayerNorm -> tanh, `feature_dim` wide, as DrQ-v2; none when `feature_dim` is 0), with DrQ's random
    shift of training images (`shift` pixels)."""

    def __init__(self, encoder: nn.Module, feature_dim: int, freeze: bool, shift: int = 0):
        super().__init__()
        self.encoder, self.freeze, self.shift = encoder, freeze, int(shift)
        self.out_dim = feature_dim or int(encoder.out_dim)
        self.trunk = (nn.Sequential(nn.Linear(encoder.out_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
                      if feature_dim > 0 else nn.Identity()).to(next(encoder.parameters()).device)

    def trainable(self) -> list[nn.Parameter]:
        """What a critic's optimizer trains: the trunk, and the encoder unless frozen."""
        return [*self.trunk.parameters(), *([] if self.freeze else self.encoder.parameters())]

    def forward(self, images: torch.Tensor, train: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> (B, out_dim). `train`: augment, and let gradients reach the trunk (and the encoder
        unless frozen); otherwise no gradients and batch-norm statistics stay as they are."""
        x = random_shift(images, self.shift, generator) if train and self.shift > 0 else images
        x = x.permute(0, 3, 1, 2)  # (B, 3, H, W)
        if train and not self.freeze:
            self.encoder.train()
            return self.trunk(self.encoder(x).float())
        with torch.no_grad():
            self.encoder.eval()
            feat = self.encoder(x).float()
        if train:  # a frozen encoder under a learning trunk
            return self.trunk(feat)
        with torch.no_grad():
            return self.trunk(feat)
