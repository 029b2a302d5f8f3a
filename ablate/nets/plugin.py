"""A researcher's own model (`model.module: package.module:factory`), trained as a fleet.

Owns: importing and calling the factory (`build_member`: one member's module, its init drawn
from the member's own INIT stream), the activation modules a factory is handed (`Unit`), the
one-time check of a module before anything is written (`check`: the layers vmap cannot batch,
the methods, the shapes, a finite forward and a backward pass), `PluginModel` — a cohort's
members as groups of one structure (activation, latent size, options), each group's members
stacked with `torch.func.stack_module_state` and run through `functional_call` under `vmap` in
one computation — and a member's weights as its module's own `state_dict`. Does not own: the
family's loss (families.py), Adam, data order and noise (fleet.py), or the built-in models
(models.py), whose interface `PluginModel` has.

The factory is called as `factory(activation, latent_dim, shape, **options)`: `activation` a
zero-argument callable returning a fresh activation module, `shape` the data's (C, H, W) or
(D,). A VAE's module has `encode(x) → (μ, log σ²)` and `decode(z) → logits or means`; the
other autoencoders' `encode(x) → z`; a GAN's `discriminate(x) → logits` and `generate(z) →
logits` (the family's `methods`). x is (B, *shape); outputs hold B·latent_dim or B·D values.
"""

from __future__ import annotations

import copy
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ablate.errors import UserError
from ablate.nets.families import FAMILY, Family
from ablate.nets.layers import Slot
from ablate.nets.models import log_likelihood
from ablate.nets.nonlinear import Activation, get_activation
from ablate.registry import import_object
from ablate.streams import FIXED_SEED, Stream, stream_seed
from ablate.study.schema import RunConfig

UNBATCHABLE = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
"""Layers a fleet cannot run under vmap as the member alone would run: BatchNorm's running
statistics are buffers written during the forward; dropout draws from one global generator
(a member's masks would depend on its cohort)."""
PROBE_BATCH = 2
"""Examples the one-time check runs the module on (vmapped over two copies of it)."""

_RECORDING: list[list[Tensor]] = []
"""While a forward records hidden values (evaluation's dead units): the list each `Unit`
appends its output to."""


@contextmanager
def _recording(into: list[Tensor] | None) -> Iterator[None]:
    if into is None:
        yield
        return
    _RECORDING.append(into)
    try:
        yield
    finally:
        _RECORDING.pop()


class Unit(nn.Module):
    """An activation as a module of one member: ablate's (a registered name, learnable ones
    included) or a user's plug-in activation. Learnable values are this module's parameters;
    per-unit ones take their width (dimension 1 of the input: features or channels) at the
    first forward, or from a state_dict being loaded."""

    def __init__(self, name: str):
        super().__init__()
        self.act: Activation = get_activation(name)
        self._names = {k.replace(".", "__"): k for k in (*self.act.params, *self.act.unit_params)}
        for k, v in self.act.params.items():
            self.register_parameter(k.replace(".", "__"), nn.Parameter(v.clone()))

    def _pending(self) -> list[str]:
        return [k for k in self.act.unit_params if not hasattr(self, k.replace(".", "__"))]

    def forward(self, x: Tensor) -> Tensor:
        for k in self._pending():  # the first forward (outside vmap): one value per unit
            v = self.act.unit_params[k]
            width = x.shape[1] if x.dim() > 1 else 1
            self.register_parameter(k.replace(".", "__"), nn.Parameter(
                v.reshape(*v.shape, 1).expand(*v.shape, width).clone().to(x.device)))
        if self.act.learnable:
            params = {orig: getattr(self, safe)[None] for safe, orig in self._names.items()}
            y = self.act.apply(x[None], params)[0]
        else:
            y = self.act.apply(x, {})
        if _RECORDING:
            _RECORDING[-1].append(y)
        return y

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for k in self._pending():  # a module rebuilt to be loaded: per-unit values as saved
            key = prefix + k.replace(".", "__")
            if key in state_dict:
                self.register_parameter(k.replace(".", "__"), nn.Parameter(torch.empty_like(state_dict[key])))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return self.act.name


def options(config: RunConfig) -> dict:
    """The keyword arguments `model.options` passes to the factory."""
    return json.loads(config.options)


def _fail(config: RunConfig, what: str) -> UserError:
    return UserError(f"model.module '{config.module}': {what}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def build_member(config: RunConfig, shape: tuple[int, ...], init_seed: int) -> nn.Module:
    """One member's module on the CPU: the factory called with the member's activation,
    latent size, the data's shape and options, its weights drawn from the global generator
    seeded with `init_seed` (the member's INIT stream; the caller's generator state is kept).
    A factory that fails, or returns no module with the family's methods, is a UserError."""
    factory = import_object(config.module)
    if not callable(factory):
        raise _fail(config, "is not callable; name a function or class that builds the module.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        try:
            module = factory(lambda: Unit(config.activation), config.latent_dim, tuple(shape), **options(config))
        except Exception as exc:  # the user's code: its error, one line
            raise _fail(config, f"calling it with options {config.options} raised {_one_line(exc)}") from None
    family = FAMILY[config.family]
    if not isinstance(module, nn.Module):
        raise _fail(config, f"returned {type(module).__name__}; it must return a torch.nn.Module.")
    missing = [m for m in family.methods if not callable(getattr(module, m, None))]
    if missing:
        raise _fail(config, f"returned a {type(module).__name__} without {' and '.join(missing)}; "
                            f"a {family.title} needs {' and '.join(f'{m}()' for m in family.methods)}.")
    _refuse_unbatchable(config, module)
    return module


def _refuse_unbatchable(config: RunConfig, module: nn.Module) -> None:
    for name, layer in module.named_modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats:
            raise _fail(config, f"layer '{name}' ({type(layer).__name__}) keeps running statistics, "
                                "which a fleet of members cannot update one by one; use GroupNorm or "
                                "LayerNorm, or pass track_running_stats=False.")
        if isinstance(layer, nn.modules.dropout._DropoutNd):
            raise _fail(config, f"layer '{name}' ({type(layer).__name__}) draws its masks from one "
                                "global generator, so a member's masks would depend on its cohort; "
                                "remove it (a built-in model's model.dropout draws each member's own).")


class _Method(nn.Module):
    """`inner.<method>(x)` as a forward, for functional_call."""

    def __init__(self, inner: nn.Module, method: str):
        super().__init__()
        self.inner, self.method = inner, method

    def forward(self, x: Tensor):
        return getattr(self.inner, self.method)(x)


def _units(recorded: list[Tensor]) -> Tensor:
    """Each unit's lowest and highest value over a forward's observations: recorded (G, B, W)
    or (G, B, C, …) per activation → (G, 2, units), a channel of feature maps one unit."""
    flat = [h if h.dim() == 3 else h.movedim(2, -1).flatten(1, -2) for h in recorded]
    return torch.cat([torch.stack([h.amin(1), h.amax(1)], 1) for h in flat], -1)


@dataclass
class Group:
    """The members of one structure: their stacked parameters (slots) and buffers."""

    name: str
    key: tuple
    latent: int
    methods: dict[str, _Method]
    slots: dict[str, Slot]
    buffers: dict[str, Tensor]
    network: dict[str, int]
    widths: dict[str, int]
    """Hidden units a member records in each of the family's two methods."""

    @property
    def owners(self) -> list[int]:
        return next(iter(self.slots.values())).owners if self.slots else []


def structure(config: RunConfig) -> tuple:
    """What makes two members' modules the same computation: the vmapped group's key."""
    return (config.module, config.options, config.activation, config.latent_dim)


class PluginModel:
    """N members of a user's module, in groups of one structure, with the built-in models'
    interface (models.Autoencoder): encode / decode / discriminate of (N, B, …) tensors,
    log_likelihood, slots, select, network, latent_mask, real_units."""

    def __init__(self, members: list[tuple[RunConfig, torch.Generator]], shape: tuple[int, ...],
                 device: torch.device):
        c0 = members[0][0]
        self.family: Family = FAMILY[c0.family]
        self.likelihood, self.shape, self.device = c0.likelihood, tuple(shape), device
        self.data_dim = math.prod(shape)
        self.latent = max(c.latent_dim for c, _ in members)
        self.acts: list = []  # no built-in activation layers (learned shapes are not drawn)
        self.rng: list[torch.Generator] | None = None
        self.real_latent = torch.tensor([c.latent_dim for c, _ in members], device=device)
        self.extra: dict[str, Slot] = {}
        if self.likelihood == "gaussian":  # learned shared observation noise (σ-VAE), log σ = 0
            self.extra["log_sigma"] = Slot(torch.zeros(len(members), 1, 1, device=device), list(range(len(members))))
        keys = list(dict.fromkeys(structure(c) for c, _ in members))
        self.groups = [self._group(f"g{k}", [(i, c, g) for i, (c, g) in enumerate(members) if structure(c) == key])
                       for k, key in enumerate(keys)]
        self._derive()

    def _group(self, name: str, rows: list[tuple[int, RunConfig, torch.Generator]]) -> Group:
        config = rows[0][1]
        modules = [build_member(c, self.shape, g.initial_seed()) for _, c, g in rows]
        network, widths = _trace(config, modules[0], self.shape)
        for m in modules[1:]:
            _trace(config, m, self.shape)  # materialises per-unit activation values
        params, buffers = torch.func.stack_module_state(modules)
        template = modules[0].to(self.device)
        owners = [i for i, _, _ in rows]
        slots = {k: Slot(v.detach().to(self.device), owners) for k, v in params.items()}
        return Group(name, structure(config), config.latent_dim,
                     {m: _Method(template, m) for m in self.family.methods}, slots,
                     {k: v.to(self.device) for k, v in buffers.items()}, network, widths)

    def _derive(self) -> None:
        order = torch.tensor([i for g in self.groups for i in g.owners], device=self.device)
        self._inverse = torch.argsort(order)
        self._identity = bool((order == torch.arange(len(order), device=self.device)).all())
        cols = torch.arange(self.latent, device=self.device)
        self.latent_mask = (cols < self.real_latent[:, None]).float().unsqueeze(1)  # (N, 1, L)

    # ---------------------------------------------------------------------- state
    def tune(self, batch: int) -> dict:
        """Nothing to choose: vmap runs each group (the built-in models' interface)."""
        return {}

    def strategies(self) -> dict[str, str]:
        return {}

    def use(self, strategies: dict[str, str]) -> None:
        """Nothing to set (the built-in models' interface)."""

    def slots(self) -> dict[str, Slot]:
        """Every stacked parameter, by `group.parameter` name (a parameter's name in the module)."""
        out = {f"{g.name}.{k}": s for g in self.groups for k, s in g.slots.items()}
        return {**out, **self.extra}

    def network(self, slot: str) -> int:
        """Which of the family's two networks a slot trains with: 0 the first method's
        (encode, discriminate), 1 the second's."""
        group, _, param = slot.partition(".")
        return next((g.network[param] for g in self.groups if g.name == group), 1)

    def select(self, new_position: dict[int, int]) -> None:
        for g in self.groups:
            rows = [r for r, o in enumerate(g.owners) if o in new_position]
            index = torch.tensor(rows, dtype=torch.long, device=self.device)
            g.slots = {k: s2 for k, s in g.slots.items() if (s2 := s.select(new_position))}
            g.buffers = {k: v.index_select(0, index) for k, v in g.buffers.items()}
        self.groups = [g for g in self.groups if g.slots]
        self.extra = {k: s2 for k, s in self.extra.items() if (s2 := s.select(new_position))}
        keep = torch.tensor(sorted(new_position, key=new_position.get), device=self.device)
        self.real_latent = self.real_latent[keep]
        self._derive()

    def member_state(self, position: int) -> dict[str, Tensor]:
        """The member at `position` as its module's own state_dict (CPU tensors)."""
        g = next(g for g in self.groups if position in g.owners)
        row = g.owners.index(position)
        keys = g.methods[self.family.methods[0]].inner.state_dict().keys()
        values = {**{k: s.tensor for k, s in g.slots.items()}, **g.buffers}
        return {k: values[k].detach()[row].cpu().clone() for k in keys}

    def load_member_state(self, position: int, state: dict[str, Tensor]) -> None:
        """Put a module's state_dict (member_state's) into the member at `position`."""
        g = next(g for g in self.groups if position in g.owners)
        row = g.owners.index(position)
        with torch.no_grad():
            for k, s in g.slots.items():
                s.tensor[row] = state[k].to(s.tensor)
            for k, v in g.buffers.items():
                if k in state:
                    v[row] = state[k].to(v)

    def member_module(self, position: int) -> nn.Module:
        """The member at `position` as its own module (as the factory builds it), on the CPU."""
        g = next(g for g in self.groups if position in g.owners)
        module = copy.deepcopy(g.methods[self.family.methods[0]].inner).cpu()
        module.load_state_dict(self.member_state(position))
        return module

    # ---------------------------------------------------------------------- forward
    def _run(self, method: str, inputs: list[Tensor], shared: bool, record: list | None) -> list:
        """Each group's `method` on its members' inputs ((G, B, …) each, or one shared (B, …)):
        [(group, output, recorded activations)]."""
        outs = []
        for g, xg in zip(self.groups, inputs):
            call = g.methods[method]
            call.train(self.rng is not None)

            def one(state: dict, xm: Tensor, call=call):
                rec: list[Tensor] | None = [] if record is not None else None
                with _recording(rec):
                    out = torch.func.functional_call(call, state, (xm,))
                return out, tuple(rec or ())

            state = {f"inner.{k}": v for k, v in (*((k, s.tensor) for k, s in g.slots.items()),
                                                  *g.buffers.items())}
            out, rec = torch.func.vmap(one, in_dims=(0, None if shared else 0), randomness="error")(state, xg)
            outs.append((g, out, rec))
        return outs

    def _split(self, x: Tensor, shared: bool = False) -> list[Tensor]:
        """x (N, B, …) → each group's members' rows; a shared x, the same for every group."""
        if shared or (len(self.groups) == 1 and self._identity):
            return [x] * len(self.groups)
        return [x.index_select(0, torch.tensor(g.owners, device=x.device)) for g in self.groups]

    def _gather(self, parts: list[Tensor]) -> Tensor:
        """Groups' outputs (G, B, …) in group order → (N, B, …) in members' order."""
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        return out if self._identity else out.index_select(0, self._inverse)

    def _record(self, hidden: list | None, method: str, outs: list) -> None:
        """Append to `hidden` each member's units' (min, max) over this forward, (N, 2, U)."""
        if hidden is None:
            return
        width = max(g.widths[method] for g in self.groups)
        parts = [torch.nn.functional.pad(_units(list(rec)), (0, width - g.widths[method])) if rec
                 else torch.zeros(len(g.owners), 2, width, device=self.device) for g, _, rec in outs]
        hidden.append(self._gather(parts))

    def _pad_latent(self, t: Tensor) -> Tensor:
        """A group's codes (G, B, latent) zero-padded to the cohort's widest latent."""
        t = t.reshape(*t.shape[:2], -1)
        return torch.nn.functional.pad(t, (0, self.latent - t.shape[-1]))

    def encode(self, x: Tensor, hidden: list | None = None) -> tuple[Tensor, Tensor | None]:
        """x (N, B, D) or shared (B, D) → μ, log σ² (N, B, L) (log σ² None but for a VAE),
        zero on padded latent dims; `hidden` gets each unit's (min, max) as (N, 2, units): the
        two observations that decide whether a unit is dead."""
        shared, method = x.dim() == 2, self.family.methods[0]
        outs = self._run(method, self._split(x.unflatten(-1, self.shape), shared), shared, hidden)
        self._record(hidden, method, outs)
        if self.family.posterior:
            return (self._gather([self._pad_latent(o[0]) for _, o, _ in outs]),
                    self._gather([self._pad_latent(o[1]) for _, o, _ in outs]))
        return self._gather([self._pad_latent(o) for _, o, _ in outs]), None

    def decode(self, z: Tensor, hidden: list | None = None) -> Tensor:
        """z (N, B, L) → the second network's output (N, B, D)."""
        method = self.family.methods[1]
        inputs = [zg[..., :g.latent] for g, zg in zip(self.groups, self._split(z))]
        outs = self._run(method, inputs, False, hidden)
        self._record(hidden, method, outs)
        return self._gather([o.reshape(*o.shape[:2], self.data_dim) for _, o, _ in outs])

    def discriminate(self, x: Tensor) -> Tensor:
        """A GAN's discriminator logits (N, B) of images x (N, B, D)."""
        shared = x.dim() == 2
        outs = self._run(self.family.methods[0], self._split(x.unflatten(-1, self.shape), shared), shared, None)
        return self._gather([o.reshape(*o.shape[:2]) for _, o, _ in outs])

    def log_likelihood(self, x: Tensor, out: Tensor) -> Tensor:
        """log p(x | z) summed over pixels: x (N, B, D) or (B, D), out (N, B, D) → (N, B)."""
        return log_likelihood(self.likelihood, x, out, self.extra.get("log_sigma"))

    def real_units(self) -> Tensor:
        """(N, U) bool: which units of `hidden` (encode then decode) are a member's own."""
        parts = []
        for method in self.family.methods:
            width = max(g.widths[method] for g in self.groups)
            own = torch.zeros(len(self.real_latent), dtype=torch.long, device=self.device)
            for g in self.groups:
                own[g.owners] = g.widths[method]
            parts.append(torch.arange(width, device=self.device)[None, :] < own[:, None])
        return torch.cat(parts, -1)


# ------------------------------------------------------------------------------ checking
def _expect(config: RunConfig, call: str, out, count: int, pair: bool) -> None:
    """An output holds `count` values per example (a pair of such tensors when `pair`), finite."""
    tensors = list(out) if pair and isinstance(out, (tuple, list)) else [out]
    want = f"{'a pair (μ, log σ²) of tensors' if pair else 'a tensor'} of {PROBE_BATCH}×{count} values"
    if (pair and len(tensors) != 2) or not all(isinstance(t, Tensor) for t in tensors):
        raise _fail(config, f"{call} returned {type(out).__name__}; it must return {want}.")
    for t in tensors:
        if t.numel() != PROBE_BATCH * count or t.shape[0] != PROBE_BATCH:
            raise _fail(config, f"{call} returned shape {tuple(t.shape)} on a batch of {PROBE_BATCH}; "
                                f"it must return {want}.")
        if not torch.isfinite(t).all():
            raise _fail(config, f"{call} gave non-finite values on its first forward; check its init "
                                "and operations.")


@torch.enable_grad()  # its backward passes run under a caller's no_grad too (ablate sample)
def _trace(config: RunConfig, module: nn.Module, shape: tuple[int, ...]) -> tuple[dict[str, int], dict[str, int]]:
    """Run one member's module once on two examples (which materialises per-unit activation
    values), check what each method returns, and find which parameters each of the family's
    two networks trains and how many hidden units each records."""
    family, gen = FAMILY[config.family], torch.Generator().manual_seed(FIXED_SEED)
    first, second = family.methods
    x = torch.rand(PROBE_BATCH, *shape, generator=gen)
    z = torch.randn(PROBE_BATCH, config.latent_dim, generator=gen)
    width, blocks = family.head(config.latent_dim)
    counts = {first: width, second: math.prod(shape)}
    outputs, widths = {}, {}
    buffers = {k: v.clone() for k, v in module.named_buffers()}
    for method, arg in ((first, x), (second, z)):
        rec: list[Tensor] = []
        try:
            with _recording(rec):
                outputs[method] = getattr(module, method)(arg)
        except Exception as exc:  # the user's code: its error, one line
            raise _fail(config, f"{method}() on a batch of shape {tuple(arg.shape)} raised {_one_line(exc)}") from None
        _expect(config, f"{method}()", outputs[method], counts[method], blocks == 2 and method == first)
        widths[method] = sum(h.shape[1] if h.dim() > 1 else 1 for h in rec)
    written = [k for k, v in module.named_buffers() if k in buffers and not torch.equal(v, buffers[k])]
    if written:
        raise _fail(config, f"writes its buffer '{written[0]}' during a forward; members run together "
                            "under vmap cannot each update their own buffers in place: keep state in "
                            "parameters or compute it afresh in each forward.")
    params = dict(module.named_parameters())
    if not params:
        raise _fail(config, "has no parameters to train.")
    out0 = outputs[first]
    loss0 = sum(t.sum() for t in (out0 if isinstance(out0, (tuple, list)) else [out0]))
    grads = torch.autograd.grad(loss0, list(params.values()), allow_unused=True) if params else []
    network = {k: 0 if g is not None else 1 for k, g in zip(params, grads)}
    if family.alternating:
        grads1 = torch.autograd.grad(outputs[second].sum(), list(params.values()), allow_unused=True)
        shared = [k for (k, g0), g1 in zip(zip(params, grads), grads1) if g0 is not None and g1 is not None]
        if shared:
            raise _fail(config, f"parameter '{shared[0]}' is used by both {first}() and {second}(); "
                                f"a {family.title}'s two networks are trained in turns and must not share weights.")
    return network, widths


@lru_cache(maxsize=None)
def sizes(config: RunConfig, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(trainable weights, hidden values per example, forward FLOPs per example — its
    matmuls and convolutions, as torch.utils.flop_counter counts them) of one member."""
    module = build_member(config, shape, FIXED_SEED)
    _, widths = _trace(config, module, shape)
    rec: list[Tensor] = []
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), _recording(rec), counter:
        x = torch.zeros(1, *shape)
        first, second = FAMILY[config.family].methods
        getattr(module, first)(x)
        getattr(module, second)(torch.zeros(1, config.latent_dim))
    return (sum(p.numel() for p in module.parameters()), sum(h.numel() for h in rec),
            counter.get_total_flops())


def check(configs: list[RunConfig], shape: tuple[int, ...]) -> None:
    """Try every structure of user's module among `configs` once, before anything is written:
    it builds, has the family's methods and no layer vmap cannot batch, its outputs have the
    right shapes and are finite, and two stacked copies run forward and backward under vmap.
    Anything else is one UserError naming the module."""
    for key in dict.fromkeys(structure(c) for c in configs if c.module):
        config = next(c for c in configs if c.module and structure(c) == key)
        two = [(config, torch.Generator().manual_seed(stream_seed(s, Stream.INIT))) for s in (0, 1)]
        model = PluginModel(two, shape, torch.device("cpu"))
        x = torch.rand(2, PROBE_BATCH, math.prod(shape), generator=torch.Generator().manual_seed(FIXED_SEED))
        try:
            first = getattr(model, model.family.methods[0])(x)
            first = first[0] if isinstance(first, tuple) else first
            second = model.decode(torch.randn(2, PROBE_BATCH, model.latent))
            (first.sum() + second.sum()).backward()
        except UserError:
            raise
        except Exception as exc:  # what vmap cannot batch in the user's code
            raise _fail(config, f"two members of it cannot run together under torch.func.vmap "
                                f"({_one_line(exc)}); use operations without in-place writes to "
                                "buffers or Python-side state, and no random draws inside forward.") from None
