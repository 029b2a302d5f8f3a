"""Stacked layers: one layer of N independent members held as [N, …] parameters.

Owns: `Slot` (a stacked parameter, the members owning its rows, its Adam state), the stacked
layers — `Linear`, `Conv` (plain or transposed) and `Nonlinear` (each member's activation,
its learnable parameters, the mask of padded units) — their per-member initialisation, and
their forward on (N, B, …) tensors, or on a (B, …) input every member shares.
Does not own: how layers compose into a model (models.py) or training (fleet.py).

A layer is built on the CPU (`init_member` writes one member's row from that member's own
generator) and then `place`d on the device, where its values become slots. `select` keeps
the rows of the members that stay (after failures and pruning).

Convolutions of N members run as one grouped convolution: the members' channels side by side
(B, N·C, H, W), `groups=N`, each member convolving only its own channels; an input every member
shares (evaluation) is one ordinary convolution with all members' filters. On the 2-core CPU
(`make bench`, [conv layer]: 16 members, 32 → 64 channels, 14×14 → 7×7, batch 128, forward and
backward) it took 258 ms against 260 ms for `torch.func.vmap(F.conv2d)`, whose batching rule
builds the same grouped convolution; with the ReLU and the second layer of an encoder, 425 ms
against 481 ms. No GPU was lent to measure there.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from ablate.nets.nonlinear import SIREN_OMEGA, Activation

KERNEL, STRIDE, PADDING = 4, 2, 1
"""Every convolution: Conv2d(k=4, stride=2, padding=1), which halves H and W (DCGAN's)."""

Groups = list[tuple[Activation, int, int]]
"""(activation, first member, end): members are sorted by activation, so each activation acts
on one contiguous slice of them."""


class Slot:
    """One stacked parameter: row i belongs to fleet member `owners[i]`; carries its Adam state."""

    def __init__(self, tensor: Tensor, owners: list[int]):
        self.tensor = tensor.requires_grad_(True)
        self.owners = owners
        self.exp_avg = torch.zeros_like(tensor)
        self.exp_avg_sq = torch.zeros_like(tensor)
        self.step = torch.zeros((), device=tensor.device)  # Adam steps taken (same for all rows)

    def select(self, new_position: dict[int, int]) -> "Slot | None":
        rows = [i for i, o in enumerate(self.owners) if o in new_position]
        if not rows:
            return None
        index = torch.tensor(rows, device=self.tensor.device)
        slot = Slot(self.tensor.detach().index_select(0, index), [new_position[self.owners[i]] for i in rows])
        slot.exp_avg = self.exp_avg.index_select(0, index)
        slot.exp_avg_sq = self.exp_avg_sq.index_select(0, index)
        slot.step = self.step.clone()
        return slot


def regroup(groups: Groups, new_position: dict[int, int]) -> Groups:
    """The activation groups of the members that stay, at their new positions."""
    out = []
    for act, s, e in groups:
        inside = [new_position[i] for i in range(s, e) if i in new_position]
        if inside:
            out.append((act, inside[0], inside[-1] + 1))
    return out


def init_weight(scheme: str, gain: float, shape: tuple[int, ...], fan_in: float, fan_out: float,
                bias: int, generator: torch.Generator, default_fan: float | None = None,
                first: bool = False) -> tuple[Tensor, Tensor]:
    """One member's weight (`shape`) and bias (`bias`,), drawn on the CPU from its generator.

    `default`: PyTorch's own layer init, kaiming_uniform(a=√5) ⇒ U(±1/√fan) for weight and
    bias, where fan is what PyTorch takes as fan-in (`default_fan`, else `fan_in`; for a
    transposed convolution PyTorch uses out_channels·k², and so do we). The other schemes use
    the true forward `fan_in` and backward `fan_out`, with a zero bias. `siren` (Sitzmann et al.
    2020): U(±1/fan_in) for a network's `first` layer, U(±√(6/fan_in)/30) after it, and
    PyTorch's default bias."""
    if scheme in ("default", "siren"):
        bound = 1.0 / math.sqrt(default_fan or fan_in)
        if scheme == "siren":
            w_bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / SIREN_OMEGA
            w = torch.empty(shape).uniform_(-w_bound, w_bound, generator=generator)
        else:
            w = torch.empty(shape).uniform_(-bound, bound, generator=generator)
        return w, torch.empty(bias).uniform_(-bound, bound, generator=generator)
    if scheme == "kaiming":
        w = torch.empty(shape).normal_(0.0, gain / math.sqrt(fan_in), generator=generator)
    elif scheme == "xavier":
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        w = torch.empty(shape).uniform_(-bound, bound, generator=generator)
    elif scheme == "lecun":
        w = torch.empty(shape).normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
    else:
        raise ValueError(f"unknown init scheme {scheme!r}")
    return w, torch.zeros(bias)


class Stacked:
    """A layer of N members: named values while built on the CPU, named slots once placed."""

    def __init__(self, values: dict[str, Tensor]):
        self.values = values
        self.slots: dict[str, Slot] = {}

    def place(self, device: torch.device) -> None:
        n = next(iter(self.values.values())).shape[0] if self.values else 0
        self.slots = {k: Slot(v.to(device), list(range(n))) for k, v in self.values.items()}
        self.values = {}

    def select(self, new_position: dict[int, int]) -> None:
        self.slots = {k: s2 for k, s in self.slots.items() if (s2 := s.select(new_position))}


class Linear(Stacked):
    """N fully connected layers: weight (N, in, blocks·out), bias (N, 1, blocks·out). A member
    narrower than the widest fills the leading rows and columns; `blocks` heads side by side
    (a VAE's μ and log σ²) are drawn one after the other, as separate layers would be."""

    def __init__(self, n: int, fan_in: int, fan_out: int, blocks: int = 1):
        super().__init__({"w": torch.zeros(n, fan_in, blocks * fan_out),
                          "b": torch.zeros(n, 1, blocks * fan_out)})
        self.width, self.blocks = fan_out, blocks

    def init_member(self, i: int, gen: torch.Generator, scheme: str, gain: float,
                    fan_in: int, fan_out: int, first: bool = False) -> None:
        """Member i's real (unpadded) layer, fan_in → fan_out, from its generator."""
        for block in range(self.blocks):
            w, b = init_weight(scheme, gain, (fan_in, fan_out), fan_in, fan_out, fan_out, gen,
                               first=first)
            col = block * self.width
            self.values["w"][i, :fan_in, col:col + fan_out] = w
            self.values["b"][i, 0, col:col + fan_out] = b

    def __call__(self, x: Tensor) -> Tensor:
        """x (N, B, in), or (B, in) shared by every member → (N, B, blocks·out)."""
        w, b = self.slots["w"].tensor, self.slots["b"].tensor
        if x.dim() == 2:
            return torch.matmul(x, w) + b
        return torch.baddbmm(b, x, w)


CONV_STRATEGIES = ("grouped", "members")
"""One grouped convolution (groups=N, the members' channels side by side), or one ordinary
convolution per member (what the one-model loop runs). The per-member strategy takes and
gives feature maps as a list of the members' (B, C, H, W) tensors — `Maps` — which the
activations between convolutions keep as a list: stacking them after every layer (and
joining the activations' groups) copied every feature map twice a step."""

Maps = Tensor | list[Tensor]
"""Feature maps of N members: one (N, B, C, H, W) tensor, or N (B, C, H, W) tensors."""


def stacked(h: Maps) -> Tensor:
    """Members' values as one tensor with the member axis first."""
    return torch.stack(h) if isinstance(h, list) else h


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings on CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Conv(Stacked):
    """N 4×4 stride-2 convolutions (`transposed`: the transposed convolution that doubles H, W,
    plus `output_padding`), as one grouped convolution. Weights are stored as PyTorch's layers
    hold them, one per member: (N, out, in, k, k), transposed (N, in, out, k, k); bias (N, out)."""

    def __init__(self, n: int, c_in: int, c_out: int, transposed: bool = False,
                 output_padding: tuple[int, int] = (0, 0)):
        shape = (c_in, c_out) if transposed else (c_out, c_in)
        super().__init__({"w": torch.zeros(n, *shape, KERNEL, KERNEL), "b": torch.zeros(n, c_out)})
        self.c_in, self.c_out, self.transposed = c_in, c_out, transposed
        self.output_padding = output_padding
        self.strategy = "grouped"
        """How N members' inputs run (CONV_STRATEGIES); `tune` picks the faster."""

    def init_member(self, i: int, gen: torch.Generator, scheme: str, gain: float,
                    first: bool = False) -> None:
        """Member i's layer. The true fans: a convolution's output sums c_in·k² inputs; a
        stride-2 transposed one's sums c_in·k²/4, and each input feeds c_out·k² outputs."""
        k2 = KERNEL * KERNEL
        if self.transposed:
            fans, default_fan = (self.c_in * k2 / STRIDE**2, self.c_out * k2), self.c_out * k2
        else:
            fans, default_fan = (self.c_in * k2, self.c_out * k2 / STRIDE**2), self.c_in * k2
        w, b = init_weight(scheme, gain, tuple(self.values["w"].shape[1:]), *fans, self.c_out,
                           gen, default_fan, first)
        self.values["w"][i], self.values["b"][i] = w, b

    def __call__(self, x: Maps) -> Maps:
        """x: members' maps (N, B, C, H, W) or a list of N (B, C, H, W), or (B, C, H, W)
        shared by every member → (N, B, C', H', W'), or a list with the per-member strategy."""
        w, b = self.slots["w"].tensor, self.slots["b"].tensor
        n = w.shape[0]
        if self.strategy == "members" and (isinstance(x, list) or x.dim() == 5):  # N ordinary convolutions
            # unbind, not x[i]: indexing's backward writes each member's gradient into a
            # zero tensor as large as all of them (N² traffic); unbind's stacks them once
            xs = x if isinstance(x, list) else x.unbind(0)
            return [self._conv(xi, wi, bi, 1) for xi, wi, bi in zip(xs, w.unbind(0), b.unbind(0))]
        x = stacked(x)
        if x.dim() == 4:  # a shared input: one ordinary convolution with every member's filters
            xb, groups = x, 1
        else:
            xb, groups = x.transpose(0, 1).flatten(1, 2), n  # (B, N·C, H, W)
        out = self._conv(xb, w.flatten(0, 1), b.flatten(), groups)
        return out.unflatten(1, (n, self.c_out)).transpose(0, 1)

    def _conv(self, x: Tensor, w: Tensor, b: Tensor, groups: int) -> Tensor:
        if self.transposed:
            return F.conv_transpose2d(x, w, b, STRIDE, PADDING, self.output_padding, groups)
        return F.conv2d(x, w, b, STRIDE, PADDING, 1, groups)

    def tune(self, shape: tuple[int, ...], timer=time.perf_counter, repeats: int = 3) -> dict[str, float]:
        """Pick the faster way to run this layer on inputs of `shape` (N, B, C, H, W) — one
        grouped convolution, or one convolution per member — by timing a forward and backward
        of each on random values (after one warm-up), as cudnn.benchmark does; both compute the
        same sums, so the choice changes members' numbers by float rounding at most. Leaves
        no gradient behind. Returns each strategy's best seconds."""
        w = self.slots["w"].tensor
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(w.device)
        seconds = {}
        for strategy in CONV_STRATEGIES:
            self.strategy, best = strategy, math.inf
            for i in range(repeats + 1):
                synchronize(w.device)
                start = timer()
                sum(h.square().sum() for h in self(x)).backward()  # (over members: a list or a tensor)
                synchronize(w.device)
                best = best if i == 0 else min(best, timer() - start)
            seconds[strategy] = best
        for slot in self.slots.values():
            slot.tensor.grad = None
        self.strategy = min(seconds, key=seconds.get)
        return seconds


class Nonlinear(Stacked):
    """Each member's activation after one layer: each activation on its contiguous slices of
    members (a decoder's activation may come in several runs), with its learnable parameters
    one copy per member — one slot per activation and parameter, holding the rows of all its
    runs; the outputs of padded units (a member narrower than the layer: `real` widths) are
    masked to zero. Before a maxout the layer's values come K per unit (unit u's pieces at
    K·u … K·u + K − 1), so a narrower member's real values still lead the row."""

    def __init__(self, groups: Groups, width: int, real: list[int] | None = None):
        values: dict[str, list[Tensor]] = {}
        for act, s, e in groups:
            for pname, value in act.initial(e - s, width).items():
                values.setdefault(f"{act.name}.{pname}", []).append(value)
        super().__init__({k: torch.cat(v) if len(v) > 1 else v[0] for k, v in values.items()})
        self.groups, self.width = groups, width
        self.pieces = groups[0][0].pieces
        """Values per unit coming in (maxout's K), the same for the whole cohort."""
        if any(act.pieces != self.pieces for act, _, _ in groups):
            raise ValueError("activations with different pieces per unit cannot share a layer")
        self.real = None if real is None else torch.tensor(real)
        self.mask: Tensor | None = None
        self.mask_in: Tensor | None = None
        self.after = ""
        """The layer it follows (`enc.0`): how records and the report name it."""
        self._switch: tuple[Tensor, Tensor] | None = None
        self.unit_switch: dict[int, Tensor] = {}
        """Each member's switch per real unit, the mean over the last epoch's training passes."""

    def place(self, device: torch.device) -> None:
        """Slots of learnable parameters are owned by their activation's members only."""
        owners: dict[str, list[int]] = {}
        for act, s, e in self.groups:
            for pname in [*act.params, *act.unit_params]:
                owners.setdefault(f"{act.name}.{pname}", []).extend(range(s, e))
        self.slots = {key: Slot(self.values[key].to(device), members) for key, members in owners.items()}
        self.values = {}
        self._index_rows()
        if self.real is not None:
            self.real = self.real.to(device)
            self._derive_mask()

    def select(self, new_position: dict[int, int]) -> None:
        super().select(new_position)
        self._switch = None  # rows of the old positions (an epoch's were taken before)
        self.groups = regroup(self.groups, new_position)
        self._index_rows()
        if self.real is not None:
            keep = sorted(new_position, key=new_position.get)
            self.real = self.real[torch.tensor(keep, device=self.real.device)]
            self._derive_mask()

    def _index_rows(self) -> None:
        """Each member's row in its activation's slots: its position among that activation's
        members, in member order (the order the slots' rows are in)."""
        self.row, seen = {}, {}
        for act, s, e in self.groups:
            first = seen.get(act.name, 0)
            self.row.update({i: first + i - s for i in range(s, e)})
            seen[act.name] = first + e - s
        self.members_of = seen

    def params(self, act: Activation, start: int, end: int) -> dict[str, Tensor]:
        """The learnable parameters of members start … end − 1, which share activation `act`:
        their rows of its slots."""
        row, whole = self.row[start], end - start == self.members_of[act.name]
        tensors = {p: self.slots[f"{act.name}.{p}"].tensor for p in [*act.params, *act.unit_params]}
        return tensors if whole else {p: t[row:row + end - start] for p, t in tensors.items()}

    def _member(self, i: int, pre: Tensor) -> Tensor:
        """Member i's activation of its own values (B, …), with its row of any parameters."""
        act = next(a for a, s, e in self.groups if s <= i < e)
        if self.mask is not None:
            pre = pre * self.mask_in[i]
        params = self.params(act, i, i + 1)
        if act.switch is not None and torch.is_grad_enabled():
            self._note_switch(act, i, i + 1, pre.unsqueeze(0), params)
        h = act.apply(pre.unsqueeze(0), params)[0]
        return h if self.mask is None else h * self.mask[i]

    def _note_switch(self, act: Activation, start: int, end: int, x: Tensor, params: dict[str, Tensor]) -> None:
        """Adds members start … end − 1's switch (ACON's β) per unit, averaged over one pass's
        examples; a pass with gradients on (training) counts, an evaluation does not."""
        with torch.no_grad():
            beta = act.switch(x, params).flatten(2).mean(1)  # (G, units)
            if self._switch is None:  # (sum per member and unit, passes per member)
                self._switch = (beta.new_zeros(len(self.row), beta.shape[1]), beta.new_zeros(len(self.row)))
            total, passes = self._switch
            total[start:end] += beta
            passes[start:end] += 1

    def take_switches(self) -> dict[int, float]:
        """Each member's mean switch over the training passes since the last take and its real
        units; `unit_switch` keeps the per-unit means (a member's real units) until the next take."""
        self.unit_switch, out = {}, {}
        if self._switch is None:
            return out
        total, passes = self._switch
        self._switch = None
        noted = passes.nonzero().flatten().tolist()
        means = total / passes.clamp(min=1)[:, None]
        real = self.real.tolist() if self.real is not None else [means.shape[1]] * len(passes)
        for i in noted:
            self.unit_switch[i] = means[i, :real[i]]
        values = torch.stack([self.unit_switch[i].mean() for i in noted]).tolist() if noted else []
        return dict(zip(noted, values))

    def _derive_mask(self) -> None:
        full = bool((self.real == self.width).all())
        cols = torch.arange(self.width, device=self.real.device)
        self.mask = None if full else (cols < self.real[:, None]).float().unsqueeze(1)  # (N, 1, W)
        self.mask_in = None if full else self.mask.repeat_interleave(self.pieces, -1)  # (N, 1, K·W)

    def __call__(self, pre: Maps) -> Maps:
        if isinstance(pre, list):  # members' feature maps apart: each member's own activation
            return [self._member(i, h) for i, h in enumerate(pre)]
        if self.mask is not None:  # padded units are zero going in too: an activation that reads
            pre = pre * self.mask_in  # its whole layer (meta_acon) must not send them a gradient
        if len(self.groups) == 1:
            pieces = [pre]
        else:  # one split (its backward is one cat), not slices (each backward a full zeros+add)
            pieces = torch.split(pre, [e - s for _, s, e in self.groups], 0)
        parts, noting = [], torch.is_grad_enabled()
        for (act, s, e), piece in zip(self.groups, pieces):
            params = self.params(act, s, e)
            if act.switch is not None and noting:
                self._note_switch(act, s, e, piece, params)
            parts.append(act.apply(piece, params))
        if len(parts) == 1:
            h = parts[0]
        elif pre.dim() > 3 and pre.transpose(0, 1).is_contiguous():
            # feature maps laid out (B, N, …) by a grouped convolution: joined in that layout,
            # the next convolution reads them without a copy
            h = torch.cat([p.transpose(0, 1) for p in parts], 1).transpose(0, 1)
        else:
            h = torch.cat(parts, 0)
        return h if self.mask is None else h * self.mask
