"""A small residual convolutional VAE with GroupNorm: the kind of model a researcher already has.

ablate trains it as a fleet (studies/own_model.yaml): `model.module: examples.resnet_vae:make_vae`
and `model.options: {width: 8, blocks: 1, groups: 4}`. ablate calls the factory as
`make_vae(activation, latent_dim, shape, **options)`, where `activation()` returns a fresh
activation module; the module needs only `encode(x) → (mu, logvar)` and `decode(z) → logits`.
It is plain PyTorch and runs without ablate: build it with `activation=torch.nn.SiLU` and
`load_state_dict` a member's weights that ablate kept.

Architecture (images (C, H, W) with H and W even):
  encoder: 3×3 conv to `width` channels → `blocks` residual cells → 4×4 stride-2 conv to 2·width
           (H/2 × W/2) → `blocks` residual cells → linear to μ and log σ²;
  decoder: linear to 2·width × H/2 × W/2 → `blocks` cells → 4×4 stride-2 transposed conv to
           `width` → `blocks` cells → 3×3 conv to C channels (Bernoulli logits).
  A residual cell is x + conv(act(GN(conv(act(GN(x)))))) (the pre-activation ResNet cell, as
  NVAE and VDVAE build theirs around their chosen activation).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class Cell(nn.Module):
    """A pre-activation residual cell: x + conv(act(GN(conv(act(GN(x))))))."""

    def __init__(self, channels: int, activation: Callable[[], nn.Module], groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), activation(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), activation(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetVAE(nn.Module):
    def __init__(self, activation: Callable[[], nn.Module], latent_dim: int, shape: tuple[int, ...],
                 width: int = 32, blocks: int = 1, groups: int = 8):
        super().__init__()
        if len(shape) != 3 or shape[1] % 2 or shape[2] % 2:
            raise ValueError(f"needs images (C, H, W) with even H and W, got shape {tuple(shape)}")
        c, h, w = shape
        self.latent_dim, self.maps = latent_dim, (2 * width, h // 2, w // 2)
        flat = 2 * width * (h // 2) * (w // 2)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), *(Cell(width, activation, groups) for _ in range(blocks)),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            *(Cell(2 * width, activation, groups) for _ in range(blocks)),
            nn.GroupNorm(groups, 2 * width), activation(), nn.Flatten())
        self.head = nn.Linear(flat, 2 * latent_dim)
        self.project = nn.Sequential(nn.Linear(latent_dim, flat), activation())
        self.decoder = nn.Sequential(
            *(Cell(2 * width, activation, groups) for _ in range(blocks)),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            *(Cell(width, activation, groups) for _ in range(blocks)),
            nn.GroupNorm(groups, width), activation(), nn.Conv2d(width, c, 3, padding=1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.head(self.encoder(x))
        return stats[:, :self.latent_dim], stats[:, self.latent_dim:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.project(z).unflatten(1, self.maps))


def make_vae(activation: Callable[[], nn.Module], latent_dim: int, shape: tuple[int, ...],
             **options) -> ResNetVAE:
    """The factory ablate calls (model.module: examples.resnet_vae:make_vae)."""
    return ResNetVAE(activation, latent_dim, shape, **options)
