"""Gradient flow: how strongly each layer of each member learns, epoch by epoch.

Owns: per member and layer, the gradient's norm (weights and bias together, the root mean
square over an epoch's steps) and the fraction of the layer's units whose gradient is (near)
zero — read from the stacked gradients after each backward pass, before Adam uses them, so it
costs one reduction per layer and step. Does not own: the backward pass (fleet.py), the epoch
records (loop.py) or what the report says about them (analysis).
"""

from __future__ import annotations

from torch import Tensor

from ablate.nets.layers import Conv, Linear, Slot

ZERO_GRAD = 1e-3
"""A unit's gradient counts as zero when its norm is below this fraction of the root mean
square of its layer's units' norms (for that member and step): a dead ReLU's is exactly 0, a
saturated sigmoid's orders of magnitude below its layer's."""


def layer_of(slot: str) -> str | None:
    """The layer a parameter belongs to (`enc.0.w` → `enc.0`); None for an activation's own
    parameters, which are not a layer's weights."""
    return None if slot.startswith("act.") else slot.rpartition(".")[0]


def unit_dims(layer, weight: Tensor) -> tuple[int, tuple[int, ...]] | None:
    """(the unit axis, the axes summed per unit) of a stacked weight: a linear layer's output
    columns, a convolution's output channels; None for a layer of another kind."""
    if isinstance(layer, Linear):
        return weight.dim() - 1, tuple(range(1, weight.dim() - 1))
    if isinstance(layer, Conv):
        unit = 2 if layer.transposed else 1
        return unit, tuple(d for d in range(1, weight.dim()) if d != unit)
    return None


class GradientFlow:
    """Sums over an epoch's steps of each member's squared gradient norm per layer and of its
    zero-gradient unit fractions; `take()` gives the epoch's values per member and starts over."""

    def __init__(self, members: int, layers: dict):
        self.members, self.layers = members, layers
        self.sq: dict[str, Tensor] = {}
        self.zero: dict[str, Tensor] = {}
        self.steps: dict[str, int] = {}

    def add(self, slots: dict[str, Slot]) -> None:
        """One step's gradients (every slot with one; a GAN's two networks in their own steps)."""
        seen: set[str] = set()
        for name, slot in slots.items():
            layer, g = layer_of(name), slot.tensor.grad
            if layer is None or g is None or len(slot.owners) != self.members:
                continue
            g = g.detach()
            sq = g.flatten(1).square().sum(1)
            self.sq[layer] = self.sq.get(layer, 0) + sq
            seen.add(layer)
            dims = unit_dims(self.layers.get(layer), g) if name.endswith(".w") else None
            if dims is not None:
                self.zero[layer] = self.zero.get(layer, 0) + _zero_fraction(g, slot.tensor.detach(), *dims)
        for layer in seen:
            self.steps[layer] = self.steps.get(layer, 0) + 1

    def take(self) -> list[dict[str, float]]:
        """Per member: `grad_<layer>` (RMS over the steps of the gradient's norm) and
        `zero_grad_<layer>` (the mean fraction of zero-gradient units)."""
        out: list[dict[str, float]] = [{} for _ in range(self.members)]
        for layer, sq in self.sq.items():
            steps = self.steps[layer]
            norm = (sq / steps).sqrt().tolist()
            zero = (self.zero[layer] / steps).tolist() if layer in self.zero else None
            for i in range(self.members):
                out[i][f"grad_{layer}"] = norm[i]
                if zero is not None:
                    out[i][f"zero_grad_{layer}"] = zero[i]
        self.sq, self.zero, self.steps = {}, {}, {}
        return out


def _zero_fraction(g: Tensor, w: Tensor, unit: int, summed: tuple[int, ...]) -> Tensor:
    """Per member, the fraction of its real units (a padded unit's weights are all zero) whose
    gradient norm is below ZERO_GRAD × the RMS over its real units: (N,)."""
    norm = g.square().sum(summed).sqrt()  # (N, units)
    real = (w != 0).any(dim=summed) if summed else w != 0
    count = real.sum(1).clamp(min=1)
    rms = ((norm.square() * real).sum(1) / count).sqrt()
    zero = (norm <= ZERO_GRAD * rms.unsqueeze(1)) & real
    return zero.sum(1).float() / count
