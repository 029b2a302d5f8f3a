"""Activations as training uses them: the functions and plugins.

Owns: resolving a catalogue entry (activations.py) or a user's `package.module:Factory` into
an `Activation` that acts on a group of fleet members at once, probing a plug-in once before
training (`probe`), and the functions the catalogue names in this module. Does not own: which names exist, their init scheme and description
(activations.py), weight init (layers.py), or where activations sit in a model (models.py).

`apply(x, params)` takes hidden values `x` of shape (G, B, H), or feature maps (G, B, C, H, W),
and, for learnable activations, `params[name]` of shape (G, *shape) — one independent copy per
member — and returns a tensor shaped like `x`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ablate.errors import UserError
from ablate.nets.activations import INIT_SCHEMES, ActivationSpec, plugin_factory, spec_of
from ablate.registry import import_object


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity for a group of members, and the init of the layer before it."""

    name: str
    apply: Callable[[Tensor, dict[str, Tensor]], Tensor]
    init: str = "default"
    gain: float = 1.0
    params: dict[str, Tensor] = field(default_factory=dict)
    """Learnable parameters of one member and layer, with their initial values."""
    unit_params: dict[str, Tensor] = field(default_factory=dict)
    """Learnable parameters of one member and hidden unit: initial value of shape S; a layer
    of W units holds (S…, W)."""
    pieces: int = 1
    """Values per unit it takes (maxout's K linear pieces): `apply` maps a layer's K·W values,
    unit by unit K consecutive ones, to its W units."""
    switch: Callable[[Tensor, dict[str, Tensor]], Tensor] | None = None
    """The switch it turns (ACON's β) for inputs x, broadcast like x; None when it has none."""
    mixture: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
    """The weights of the bases it mixes, {base: (G,)}; None when it mixes none."""

    @property
    def learnable(self) -> bool:
        return bool(self.params or self.unit_params)

    def initial(self, members: int, width: int) -> dict[str, Tensor]:
        """Initial learnable values of `members` members in a layer of `width` units: per-layer
        parameters (members, S…), per-unit ones (members, S…, width)."""
        out = {k: v.expand(members, *v.shape).clone() for k, v in self.params.items()}
        out.update({k: v.reshape(*v.shape, 1).expand(members, *v.shape, width).clone()
                    for k, v in self.unit_params.items()})
        return out


def _scalar(p: Tensor, x: Tensor) -> Tensor:
    """A per-member scalar parameter (G,) viewed to broadcast over x: (G, B, H) hidden units
    or (G, B, C, H, W) feature maps."""
    return p.view(-1, *(1,) * (x.dim() - 1))


def _unit(p: Tensor, x: Tensor) -> Tensor:
    """A per-member, per-unit parameter (G, W) viewed to broadcast over x: (G, B, W) or, with a
    channel as the unit, (G, B, W, H, W')."""
    return p.view(p.shape[0], 1, p.shape[1], *(1,) * (x.dim() - 3))


def identity(x: Tensor) -> Tensor:
    return x


def leaky_relu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.01)


def prelu(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    return torch.where(x >= 0, x, _scalar(p["slope"], x) * x)


def swish(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    return x * torch.sigmoid(_scalar(p["beta"], x) * x)


def rational(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    """P(x) / (1 + |Σ_{k=1..4} q_k x^k|), P of degree 5; coefficients (G, 6) and (G, 4)."""
    a, b = p["p"], p["q"]
    num = _scalar(a[:, 5], x)
    for k in range(4, -1, -1):  # Horner
        num = num * x + _scalar(a[:, k], x)
    den = _scalar(b[:, 3], x)
    for k in range(2, -1, -1):
        den = den * x + _scalar(b[:, k], x)
    return num / (1.0 + (den * x).abs())


def apl(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    """max(0, x) + Σ_s a_s · max(0, −x + b_s); a, b of shape (G, 2, W)."""
    out = F.relu(x)
    for s in range(p["a"].shape[1]):
        out = out + _unit(p["a"][:, s], x) * F.relu(_unit(p["b"][:, s], x) - x)
    return out


def snake(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    """x + sin²(αx)/α with α (G, W)."""
    alpha = _unit(p["alpha"], x)
    return x + torch.sin(alpha * x).square() / alpha


def acon(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    """ACON-C (Ma et al. 2021): (p₁ − p₂)·x·σ(β(p₁ − p₂)x) + p₂·x, with p₁, p₂, β per unit
    (G, W). β switches it between linear (β → 0: the mean of p₁x and p₂x) and a max of p₁x
    and p₂x (β → ∞)."""
    return _acon(x, _unit(p["p1"], x), _unit(p["p2"], x), _unit(p["beta"], x))


def meta_acon(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    """Meta-ACON (Ma et al. 2021): ACON-C whose β is computed from the layer's input by a
    small network of the member's own — `meta_beta` — so each example gets its own switch."""
    return _acon(x, _unit(p["p1"], x), _unit(p["p2"], x), meta_beta_of(x, p))


def acon_switch(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    """acon's β per unit, (G, 1, W) or (G, 1, C, 1, 1): the same for every input."""
    return _unit(p["beta"], x)


def meta_beta_of(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    """meta_acon's β of each example and unit, as `meta_acon` computes it."""
    return meta_beta(x, p["w1"], p["w2"])


def _acon(x: Tensor, p1: Tensor, p2: Tensor, beta: Tensor) -> Tensor:
    d = (p1 - p2) * x
    return d * torch.sigmoid(beta * d) + p2 * x


def meta_beta(x: Tensor, w1: Tensor, w2: Tensor) -> Tensor:
    """Meta-ACON's per-example switch β = σ(W₂ᵀ W₁ s) for inputs x (G, B, W) or feature maps
    (G, B, C, H, W): s is each unit's value (each channel's mean over positions), W₁ and W₂
    (G, R, W) map the layer's W units through R hidden ones and back. Padded units hold zeros,
    so they change no member's β."""
    s = x if x.dim() == 3 else x.mean((-2, -1))
    beta = torch.sigmoid(torch.einsum("gbr,grw->gbw", torch.einsum("gbw,grw->gbr", s, w1), w2))
    return beta if x.dim() == 3 else beta[..., None, None]


BLEND_BASES = (("identity", identity), ("relu", F.relu), ("tanh", torch.tanh), ("elu", F.elu),
               ("silu", F.silu))
"""The base activations `blend` mixes, in the order of its weights."""


def blend_weights(p: dict[str, Tensor]) -> dict[str, Tensor]:
    """blend's weight of each base, {base: (G,)}."""
    w = torch.softmax(p["logits"], -1)
    return {name: w[:, k] for k, (name, _) in enumerate(BLEND_BASES)}


def blend(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    """Σ_k softmax(a)_k · g_k(x) over BLEND_BASES, a learnable per layer (G, K): an adaptive
    blending unit (Sütfeld et al. 2020) whose weights stay a convex combination."""
    w = torch.softmax(p["logits"], -1)
    return sum(_scalar(w[:, k], x) * g(x) for k, (_, g) in enumerate(BLEND_BASES))


def maxout(x: Tensor, pieces: int) -> Tensor:
    """Maxout (Goodfellow et al. 2013): each unit the max of its `pieces` consecutive values —
    (G, B, K·W) → (G, B, W), or feature maps (G, B, K·C, H, W) → (G, B, C, H, W) — as
    nn.Linear(d, K·w)(x).view(…, w, K).max(-1) computes it for one model (max, not amax: its
    backward scatters to the kept piece, 1.5× faster on the CPU than amax's, which compares
    every piece with the max again)."""
    return x.unflatten(2, (-1, pieces)).max(3).values


SIREN_OMEGA = 30.0


def sine(x: Tensor) -> Tensor:
    return torch.sin(SIREN_OMEGA * x)


def _from_spec(spec: ActivationSpec) -> Activation:
    fn = import_object(spec.function)
    if spec.pieces > 1:
        apply = lambda x, params: fn(x, spec.pieces)  # noqa: E731
    else:
        apply = fn if spec.learnable else (lambda x, params: fn(x))
    params = {k: torch.tensor(v, dtype=torch.float32) for k, v in spec.params.items()}
    units = {k: torch.tensor(v, dtype=torch.float32) for k, v in spec.unit_params.items()}
    switch = import_object(spec.switch) if spec.switch else None
    mixture = import_object(spec.mixture) if spec.mixture else None
    return Activation(spec.name, apply, spec.init, spec.gain, params, units, spec.pieces, switch, mixture)


def _from_plugin(path: str) -> Activation:
    """Wrap a user's `package.module:Factory` (returning an elementwise nn.Module or callable)."""
    factory = plugin_factory(path)
    try:
        module = factory()
    except Exception as exc:  # the user's factory: its error, one line
        raise UserError(f"activation '{path}': calling the factory raised {type(exc).__name__}: "
                        f"{str(exc)[:200]}.") from None
    if not callable(module):
        raise UserError(f"activation '{path}' returned {type(module).__name__}, which is not "
                        "callable; return an elementwise torch module or function.")
    init = getattr(factory, "init", "default")
    if init not in INIT_SCHEMES:
        raise UserError(f"activation '{path}' declares init '{init}'; use one of {INIT_SCHEMES}.")
    gain = float(getattr(factory, "gain", 1.0))
    if isinstance(module, nn.Module) and any(True for _ in module.parameters()):
        params = {k: v.detach().clone() for k, v in module.named_parameters()}

        def apply(x: Tensor, p: dict[str, Tensor]) -> Tensor:
            one = lambda pm, xm: torch.func.functional_call(module, pm, (xm,))  # noqa: E731
            return torch.func.vmap(one)(p, x)

        return Activation(path, apply, init, gain, params)
    return Activation(path, lambda x, params: module(x), init, gain, {})


PROBE_SHAPE = (2, 4, 6)
"""(members, batch, units): the tensor a plug-in activation is tried on before training."""


def probe(name: str) -> None:
    """Try a user's `package.module:Factory` once, before anything is trained or written: it
    must build, keep the shape of a stacked layer's tensor, give finite values on [−3, 3], and
    be elementwise (changing one input changes only its own output; softmax or GLU do not
    qualify). Anything else is one UserError naming the plug-in."""
    act = get_activation(name)
    x = torch.linspace(-3.0, 3.0, math.prod(PROBE_SHAPE)).reshape(PROBE_SHAPE)
    nudged = x.clone()
    nudged[1, 2, 3] += 0.37
    try:
        with torch.no_grad():
            params = act.initial(PROBE_SHAPE[0], PROBE_SHAPE[2])
            y, y2 = act.apply(x, params), act.apply(nudged, params)
    except Exception as exc:  # the user's code: its error, one line
        raise UserError(f"activation '{name}' fails on a {PROBE_SHAPE} tensor with "
                        f"{type(exc).__name__}: {str(exc)[:160]}; it must map a tensor "
                        "elementwise, keeping its shape.") from None
    if not isinstance(y, Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise UserError(f"activation '{name}' turns a {PROBE_SHAPE} tensor into {got}; an "
                        "activation must keep the shape (elementwise, like torch.tanh).")
    if not torch.isfinite(y).all():
        raise UserError(f"activation '{name}' gives non-finite values on inputs in [-3, 3].")
    others = y2 != y
    others[1, 2, 3] = False
    if others.any():
        raise UserError(f"activation '{name}' is not elementwise: changing one input changed "
                        f"{int(others.sum())} other outputs (softmax and GLU mix units); use a "
                        "function of each value alone.")


def get_activation(name: str) -> Activation:
    """The activation called `name` (`maxout:K` included), or a user's `package.module:Factory`."""
    spec = spec_of(name)
    return _from_plugin(name) if spec is None else _from_spec(spec)
