"""Every activation function a study can name, each with the weight initialisation it needs.

Owns: the activation registry, the `Activation` record, weight-init schemes, plugins loaded
from `package.module:Factory`. Does not own: where activations sit in a model (fleet.py).

An activation acts on a *group* of fleet members at once: `apply(x, params)` takes hidden
values `x` of shape (G, B, H) and, for learnable activations, `params[name]` of shape
(G, *shape) — one independent copy per member — and returns a tensor shaped like `x`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ablate.errors import UserError
from ablate.registry import Registry, import_object

INIT_SCHEMES = ("default", "kaiming", "xavier", "lecun")


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity and the initialisation of the layer that feeds it."""

    name: str
    apply: Callable[[Tensor, dict[str, Tensor]], Tensor]
    init: str = "default"
    """Weight init of the layer before it: default (PyTorch Linear), kaiming, xavier or lecun."""
    gain: float = 1.0
    """Gain for kaiming / xavier init (torch.nn.init.calculate_gain)."""
    params: dict[str, Tensor] = field(default_factory=dict)
    """Learnable parameters of one member, with their initial values."""
    description: str = ""


def _scalar(p: Tensor) -> Tensor:
    """A per-member scalar parameter (G,) viewed to broadcast over (G, B, H)."""
    return p.view(-1, 1, 1)


def _plain(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor, dict[str, Tensor]], Tensor]:
    return lambda x, params: fn(x)


def _kaiming_gain(slope: float = 0.0) -> float:
    return math.sqrt(2.0 / (1.0 + slope**2))


ACTIVATIONS: Registry[Activation] = Registry("activation")


def _add(name: str, apply, init: str, gain: float = 1.0, params=None, description: str = ""):
    ACTIVATIONS.register(name, Activation(name, apply, init, gain, params or {}, description))


_add("identity", _plain(lambda x: x), "xavier", 1.0, description="no nonlinearity (a linear VAE)")
_add("exponential", _plain(torch.exp), "lecun", description="exp(x); unbounded, prone to diverge")
_add("sigmoid", _plain(torch.sigmoid), "xavier", 1.0, description="logistic 1/(1+e^-x)")
_add("tanh", _plain(torch.tanh), "xavier", 5.0 / 3.0, description="hyperbolic tangent")
_add("hardtanh", _plain(F.hardtanh), "xavier", 1.0, description="clip(x, -1, 1)")
_add("relu", _plain(F.relu), "kaiming", _kaiming_gain(), description="max(0, x)")
_add("leaky_relu", _plain(lambda x: F.leaky_relu(x, 0.01)), "kaiming", _kaiming_gain(0.01),
     description="max(0.01x, x)")
_add("prelu", lambda x, p: torch.where(x >= 0, x, _scalar(p["slope"]) * x), "kaiming",
     _kaiming_gain(0.25), {"slope": torch.tensor(0.25)},
     description="leaky ReLU with a learnable negative slope (init 0.25), one per layer")
_add("elu", _plain(F.elu), "kaiming", _kaiming_gain(), description="x if x>0 else e^x-1")
_add("selu", _plain(F.selu), "lecun", description="self-normalising ELU; needs LeCun normal init")
_add("celu", _plain(F.celu), "kaiming", _kaiming_gain(), description="continuously differentiable ELU")
_add("gelu", _plain(F.gelu), "kaiming", _kaiming_gain(), description="x·Φ(x)")
_add("silu", _plain(F.silu), "kaiming", _kaiming_gain(), description="x·sigmoid(x)")
_add("swish", lambda x, p: x * torch.sigmoid(_scalar(p["beta"]) * x), "kaiming", _kaiming_gain(),
     {"beta": torch.tensor(1.0)}, description="x·sigmoid(βx) with learnable β (init 1), one per layer")
_add("mish", _plain(F.mish), "kaiming", _kaiming_gain(), description="x·tanh(softplus(x))")
_add("softplus", _plain(F.softplus), "kaiming", _kaiming_gain(), description="log(1+e^x)")


def _from_plugin(path: str) -> Activation:
    """Wrap a user's `package.module:Factory` (returning an elementwise nn.Module or callable)."""
    factory = import_object(path)
    if not callable(factory):
        raise UserError(f"activation '{path}' is not callable; it must be a factory returning "
                        "an elementwise torch module or function.")
    module = factory()
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

        return Activation(path, apply, init, gain, params, f"plugin {path}")
    return Activation(path, _plain(module), init, gain, {}, f"plugin {path}")


def get_activation(name: str) -> Activation:
    """The activation called `name`, or a user's `package.module:Factory`."""
    return ACTIVATIONS.get(name, plugin=_from_plugin)


def init_weight(scheme: str, gain: float, fan_in: int, fan_out: int,
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Weight (fan_in, fan_out) and bias (fan_out,) of one member's layer, drawn on the CPU."""
    if scheme == "default":  # torch.nn.Linear: kaiming_uniform(a=√5) ⇒ U(±1/√fan_in), same for bias
        bound = 1.0 / math.sqrt(fan_in)
        w = torch.empty(fan_in, fan_out).uniform_(-bound, bound, generator=generator)
        b = torch.empty(fan_out).uniform_(-bound, bound, generator=generator)
        return w, b
    if scheme == "kaiming":
        w = torch.empty(fan_in, fan_out).normal_(0.0, gain / math.sqrt(fan_in), generator=generator)
    elif scheme == "xavier":
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        w = torch.empty(fan_in, fan_out).uniform_(-bound, bound, generator=generator)
    elif scheme == "lecun":
        w = torch.empty(fan_in, fan_out).normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
    else:
        raise ValueError(f"unknown init scheme {scheme!r}")
    return w, torch.zeros(fan_out)
