"""Gradient flow: how strongly each layer of each member learns, epoch by epoch.

Owns: per member and layer, the gradient's norm (weights and bias together, the root mean
square over an epoch's steps) and the fraction of the layer's units whose gradient is (near)
zero — read from the stacked gradients after each backward pass, before Adam uses them, so it
costs one reduction per layer and step. Does not own: the backward pass (fleet.py), the epoch
records (loop.py) or what the report says about them (analysis).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ablate.nets.layers import Conv, Linear, Slot
from ablate.study.metrics import ZERO_GRAD

ZERO_EVERY = 20
"""Zero-gradient units are counted at every this-many-th step of a layer (the first of an epoch
included): counting them reduces the gradient over its strided input axis, which at every
step cost a fleet of 784-400-20 VAEs ~60% of its step; the norms, one contiguous reduction,
are taken at every step (no measurable cost)."""
def layer_of(slot: str) -> str | None:
    """The layer a parameter belongs to (`enc.0.w` → `enc.0`); None for an activation's own
    parameters, which are not a layer's weights."""
    return None if slot.startswith("act.") else slot.rpartition(".")[0]


def unit_axes(layer, weight: Tensor) -> tuple[int, ...] | None:
    """The axes of a stacked weight summed over for each of its units (a linear layer's output
    columns, a convolution's output channels); None for a layer of another kind."""
    if isinstance(layer, Linear):
        return tuple(range(1, weight.dim() - 1))
    if isinstance(layer, Conv):
        unit = 2 if layer.transposed else 1
        return tuple(d for d in range(1, weight.dim()) if d != unit)
    return None


class GradientFlow:
    """Sums over an epoch's steps of each member's squared gradient norm per layer, and of its
    zero-gradient unit fractions at every ZERO_EVERY-th step; `take()` gives the epoch's values
    per member and starts over."""

    def __init__(self, members: int, layers: dict):
        self.members, self.layers = members, layers
        self.sq: dict[str, Tensor] = {}
        self.zero: dict[str, Tensor] = {}
        self.steps: dict[str, int] = {}
        self.counted: dict[str, int] = {}
        self.real: dict[str, Tensor] = {}
        """Each layer's real units per member (N, units), found at its first count."""

    def add(self, slots: dict[str, Slot]) -> None:
        """One step's gradients (every slot with one; a GAN's two networks in their own steps)."""
        seen: set[str] = set()
        for name, slot in slots.items():
            layer, g = layer_of(name), slot.tensor.grad
            if layer is None or g is None or len(slot.owners) != self.members:
                continue
            g = g.detach()
            seen.add(layer)
            self.sq[layer] = self.sq.get(layer, 0) + torch.linalg.vector_norm(g.flatten(1), dim=1).square()
            summed = unit_axes(self.layers.get(layer), g) if name.endswith(".w") else None
            if summed is not None and self.steps.get(layer, 0) % ZERO_EVERY == 0:
                if layer not in self.real:  # a padded unit's weights are all zero, for good
                    self.real[layer] = slot.tensor.detach().square().sum(summed) > 0
                norms = g.square().sum(summed).sqrt()  # (N, units)
                self.zero[layer] = self.zero.get(layer, 0) + _zero_fraction(norms, self.real[layer])
                self.counted[layer] = self.counted.get(layer, 0) + 1
        for layer in seen:
            self.steps[layer] = self.steps.get(layer, 0) + 1

    def take(self) -> list[dict[str, float]]:
        """Per member: `grad_<layer>` (RMS over the steps of the gradient's norm) and
        `zero_grad_<layer>` (the mean over the counted steps of the zero-gradient fraction)."""
        out: list[dict[str, float]] = [{} for _ in range(self.members)]
        for layer, sq in self.sq.items():
            steps = self.steps[layer]
            norm = (sq / steps).sqrt().tolist()
            zero = (self.zero[layer] / self.counted[layer]).tolist() if layer in self.zero else None
            for i in range(self.members):
                out[i][f"grad_{layer}"] = norm[i]
                if zero is not None:
                    out[i][f"zero_grad_{layer}"] = zero[i]
        self.sq, self.zero, self.steps, self.counted = {}, {}, {}, {}
        return out


def _zero_fraction(norm: Tensor, real: Tensor) -> Tensor:
    """Per member, the fraction of its real units (a padded unit's weights are all zero) whose
    gradient norm (N, units) is below ZERO_GRAD × the RMS over its real units: (N,)."""
    count = real.sum(1).clamp(min=1)
    rms = ((norm.square() * real).sum(1) / count).sqrt()
    zero = (norm <= ZERO_GRAD * rms.unsqueeze(1)) & real
    return zero.sum(1).float() / count
