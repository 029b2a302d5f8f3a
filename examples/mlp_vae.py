"""ablate's built-in MLP VAE written as a user's module: the smallest example of model.module.

`model.module: examples.mlp_vae:make_vae`, `model.options: {hidden: [400]}` trains the same
architecture as the built-in `model.hidden: [400]` with `init: default` (PyTorch's own layer
init): x → [Linear, activation] per width → μ and log σ²; z → [Linear, activation] per width in
reverse → Linear to the pixels (Bernoulli logits). `make bench` times it against the built-in
fleet and the one-model loop.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn


class MLPVAE(nn.Module):
    def __init__(self, activation: Callable[[], nn.Module], latent_dim: int, shape: Sequence[int],
                 hidden: Sequence[int] = (256,)):
        super().__init__()
        dim, widths = math.prod(shape), list(hidden)
        self.latent_dim, self.shape = latent_dim, tuple(shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip([dim, *widths[:-1]], widths):
            layers += [nn.Linear(a, b), activation()]
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], 2 * latent_dim)
        back = widths[::-1]
        layers = []
        for a, b in zip([latent_dim, *back[:-1]], back):
            layers += [nn.Linear(a, b), activation()]
        self.decoder = nn.Sequential(*layers, nn.Linear(back[-1], dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.head(self.encoder(x))
        return stats[:, :self.latent_dim], stats[:, self.latent_dim:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.shape)


def make_vae(activation: Callable[[], nn.Module], latent_dim: int, shape: Sequence[int],
             **options) -> MLPVAE:
    """The factory ablate calls (model.module: examples.mlp_vae:make_vae)."""
    return MLPVAE(activation, latent_dim, shape, **options)
