"""Every activation a study can name: the catalogue, torch-free.

Owns: the activation registry (name → `ActivationSpec`: the lazy `module:attr` path of its
function, the weight initialisation it needs, its learnable parameters and a description) and
the init scheme names. Importing it imports no torch: the study parser and `ablate list`
check and show names; only training resolves the functions (nonlinear.py).
Does not own: the functions themselves, plugins, or weight init (nonlinear.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ablate.errors import UserError
from ablate.registry import Registry, import_object

INIT_SCHEMES = ("default", "kaiming", "xavier", "lecun", "siren")
"""default: PyTorch's own layer init; kaiming, xavier, lecun as torch.nn.init names them;
siren: Sitzmann et al. 2020 (first layer U(±1/fan_in), the others U(±√(6/fan_in)/ω₀))."""


@dataclass(frozen=True)
class ActivationSpec:
    """An elementwise nonlinearity, by name, and the initialisation of the layer that feeds it."""

    name: str
    function: str
    """`module:attr` of `f(x)` or, with learnable parameters, `f(x, params)`; imported to train."""
    init: str = "default"
    """Weight init of the layer before it: default (PyTorch Linear), kaiming, xavier or lecun."""
    gain: float = 1.0
    """Gain for kaiming / xavier init (torch.nn.init.calculate_gain)."""
    params: dict[str, float | tuple[float, ...]] = field(default_factory=dict)
    """Learnable parameters, one copy per layer and member, and their initial values."""
    unit_params: dict[str, float | tuple[float, ...]] = field(default_factory=dict)
    """Learnable parameters, one copy per hidden unit (a channel in a conv layer) and member."""
    description: str = ""
    pieces: int = 1
    """Linear pieces per unit: the layer before gives each of its units `pieces` values, the
    activation keeps one (maxout: their max). 1 for an elementwise activation."""
    switch: str = ""
    """`module:attr` of `g(x, params)`, the switch it turns (ACON's β, broadcast like x), which
    training records epoch by epoch; "" when it has none."""
    mixture: str = ""
    """`module:attr` of `g(params)`, the weights of the bases it mixes ({base: (G,)}), which
    training records epoch by epoch; "" when it mixes none."""

    def learnable_count(self, units: int) -> int:
        """Learnable values of one layer of `units` units (a conv layer's units are channels)."""
        size = lambda v: len(v) if isinstance(v, tuple) else 1  # noqa: E731
        return (sum(size(v) for v in self.params.values())
                + units * sum(size(v) for v in self.unit_params.values()))

    @property
    def learnable(self) -> bool:
        return bool(self.params or self.unit_params)


def kaiming_gain(slope: float = 0.0) -> float:
    return math.sqrt(2.0 / (1.0 + slope**2))


ACTIVATIONS: Registry[ActivationSpec] = Registry("activation")
_F, _OWN = "torch.nn.functional", "ablate.nets.nonlinear"


def _add(name: str, function: str, init: str, gain: float = 1.0, params=None, description: str = "",
         unit_params=None, pieces: int = 1, switch: str = "", mixture: str = ""):
    ACTIVATIONS.register(name, ActivationSpec(name, function, init, gain, params or {},
                                              unit_params or {}, description, pieces, switch, mixture))


_add("identity", f"{_OWN}:identity", "xavier", 1.0, description="no nonlinearity (a linear VAE)")
_add("exponential", "torch:exp", "lecun", description="exp(x); unbounded, prone to diverge")
_add("sigmoid", "torch:sigmoid", "xavier", 1.0, description="logistic 1/(1+e^-x)")
_add("tanh", "torch:tanh", "xavier", 5.0 / 3.0, description="hyperbolic tangent")
_add("hardtanh", f"{_F}:hardtanh", "xavier", 1.0, description="clip(x, -1, 1)")
_add("relu", f"{_F}:relu", "kaiming", kaiming_gain(), description="max(0, x)")
_add("leaky_relu", f"{_OWN}:leaky_relu", "kaiming", kaiming_gain(0.01), description="max(0.01x, x)")
_add("prelu", f"{_OWN}:prelu", "kaiming", kaiming_gain(0.25), {"slope": 0.25},
     description="leaky ReLU with a learnable negative slope (init 0.25), one per layer")
_add("elu", f"{_F}:elu", "kaiming", kaiming_gain(), description="x if x>0 else e^x-1")
_add("selu", f"{_F}:selu", "lecun", description="self-normalising ELU; needs LeCun normal init")
_add("celu", f"{_F}:celu", "kaiming", kaiming_gain(), description="continuously differentiable ELU")
_add("gelu", f"{_F}:gelu", "kaiming", kaiming_gain(), description="x·Φ(x)")
_add("silu", f"{_F}:silu", "kaiming", kaiming_gain(), description="x·sigmoid(x)")
_add("swish", f"{_OWN}:swish", "kaiming", kaiming_gain(), {"beta": 1.0},
     description="x·sigmoid(βx) with learnable β (init 1), one per layer")
_add("mish", f"{_F}:mish", "kaiming", kaiming_gain(), description="x·tanh(softplus(x))")
_add("softplus", f"{_F}:softplus", "kaiming", kaiming_gain(), description="log(1+e^x)")
RATIONAL_INIT = {"p": (0.015193, 0.505, 2.528227, 3.983959, 2.160664, 0.388511),
                 "q": (0.0, 7.889028, 0.0, 0.769328)}
"""Padé coefficients fitting leaky ReLU (slope 0.01) on [−3, 3], largest error 0.0152: a
least-squares fit refined to an L16 fit (LBFGS on 2 001 points), as Molina et al. 2020
initialise their PAUs from a fit to the activation they replace."""
_add("rational", f"{_OWN}:rational", "kaiming", kaiming_gain(0.01), dict(RATIONAL_INIT),
     description="Padé unit P(x)/(1+|Σ b_k x^k|), degrees 5/4, learnable per layer (Molina et al. "
                 "2020), initialised to fit leaky ReLU")
_add("apl", f"{_OWN}:apl", "kaiming", kaiming_gain(), unit_params={"a": (0.0, 0.0), "b": (-0.5, 0.5)},
     description="adaptive piecewise linear max(0,x)+Σ a_s·max(0,−x+b_s), S=2 hinges learnable "
                 "per unit (Agostinelli et al. 2015)")
_add("snake", f"{_OWN}:snake", "kaiming", kaiming_gain(), unit_params={"alpha": 1.0},
     description="x + sin²(αx)/α, α learnable per unit, init 1 (Ziyin et al. 2020)")
_add("sine", f"{_OWN}:sine", "siren", description="sin(30x) with the SIREN init (Sitzmann et al. 2020)")
_add("acon", f"{_OWN}:acon", "kaiming", kaiming_gain(), unit_params={"p1": 1.0, "p2": 0.0, "beta": 1.0},
     description="ACON-C (p1−p2)·x·σ(β(p1−p2)x)+p2·x, p1, p2, β learnable per unit, init as SiLU "
                 "(Ma et al. 2021)", switch=f"{_OWN}:acon_switch")
META_ACON_W1, META_ACON_W2 = (0.1, -0.1, 0.05, -0.05), (0.1, 0.1, -0.1, -0.1)
"""Initial W₁ and W₂ of meta_acon's switch network, one value per hidden unit (R = 4), the same
for every unit of a layer: Σ_r W₁W₂ = 0, so β starts at σ(0) = ½ for every input, and both
layers learn from the first step (with W₂ = 0, W₁ would get no gradient until W₂ moved)."""
_add("meta_acon", f"{_OWN}:meta_acon", "kaiming", kaiming_gain(),
     unit_params={"p1": 1.0, "p2": 0.0, "w1": META_ACON_W1, "w2": META_ACON_W2},
     description="ACON-C whose switch β is computed from the layer's input by a per-member network "
                 "of 4 hidden units: each example its own form (Ma et al. 2021)",
     switch=f"{_OWN}:meta_beta_of")
MAXOUT_PIECES = (2, 8)
"""The pieces `maxout:K` may have: K from 2 (plain `maxout`) to 8."""
_add("maxout", f"{_OWN}:maxout", "lecun", 1.0,
     description="max over K linear pieces per unit (Goodfellow et al. 2013): the layer before "
                 "has K times the units; `maxout` is K = 2, `maxout:K` any K up to 8",
     pieces=MAXOUT_PIECES[0])
_add("blend", f"{_OWN}:blend", "kaiming", kaiming_gain(), {"logits": (0.0,) * 5},
     description="softmax-weighted mix of identity, relu, tanh, elu and silu, the weights learnable "
                 "per layer (adaptive blending units, Sütfeld et al. 2020)",
     mixture=f"{_OWN}:blend_weights")


DECODER_LAYERS = ("dec", "proj", "deconv")
"""Layer-name prefixes of the decoder (models.py names its layers so): their activation is the
member's decoder_activation."""

SHAPE_GRID = tuple(round(-3.0 + 0.1 * i, 1) for i in range(61))
"""Where a learnable activation's learned shape is drawn (training evaluates it; the report plots it)."""


def spec_of(name: str) -> ActivationSpec | None:
    """The catalogue's entry for `name` (`maxout:K` is maxout with K pieces); None for a user's
    `package.module:Factory`. An unknown name or a K out of range is a UserError."""
    base, colon, pieces = name.partition(":")
    if base == "maxout" and colon:
        low, high = MAXOUT_PIECES
        if not (pieces.isdigit() and low <= int(pieces) <= high):
            raise UserError(f"activation '{name}': maxout takes a whole number of pieces from "
                            f"{low} to {high}, as in 'maxout:3'.")
        return replace(ACTIVATIONS.get("maxout"), name=name, pieces=int(pieces))
    if name not in ACTIVATIONS and colon:
        return None
    return ACTIVATIONS.get(name)  # an unknown name: "did you mean" and the known ones


def pieces_of(name: str) -> int:
    """Linear pieces per unit of activation `name` (1 unless it is maxout)."""
    spec = spec_of(name)
    return 1 if spec is None else spec.pieces


def plugin_factory(path: str):
    """A user's `package.module:Factory`, imported and checked to be callable (not called)."""
    factory = import_object(path)
    if not callable(factory):
        raise UserError(f"activation '{path}' is not callable; it must be a factory returning "
                        "an elementwise torch module or function.")
    return factory


def check_activation(name: str) -> str:
    """A name a study may use: a registered activation, or a user's `package.module:Factory`
    that imports (its module is imported; the factory is called only to train)."""
    if spec_of(name) is None:
        plugin_factory(name)
    return name
