"""The fleet: a cohort of independent MLP VAEs (or AEs) stored and trained as one batched model.
Its invariants and their tests: docs/architecture.md, "The fleet".

Owns: stacked parameters (N, in, out) and their padding masks, the per-member activations,
per-member random generators, the loss, and a stacked Adam that is N independent Adams.
Does not own: the epoch loop, evaluation metrics or bookkeeping of results (train.py).

Invariants (tested):
- A member's numbers do not depend on the other members: it draws its init, data order and
  noise from generators seeded by its own seed only; members share no parameter, the loss is
  a sum over members, and Adam is elementwise.
- Members narrower than the widest (hidden width, latent size) are zero-padded; outputs of
  padded units are masked to zero, so padded weights get exactly zero gradient and stay zero.
- Members are kept sorted by activation, so each activation applies to one contiguous slice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ablate.nonlinear import Activation, get_activation, init_weight
from ablate.study import RunConfig

LOG_2PI = math.log(2.0 * math.pi)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
FUSED_ADAM = hasattr(torch, "_fused_adam_")
"""PyTorch's fused Adam kernel (a private op, so checked for): used when a cohort shares one
lr; otherwise, or without it, the same update written out per row (tests run both paths)."""


@dataclass(frozen=True)
class Member:
    """One model to train: a configuration and a seed, under a key unique in its study."""

    key: str
    config: RunConfig
    seed: int


def stream_seed(seed: int, stream: int) -> int:
    """A well-mixed 63-bit seed for one of a member's random streams (1 init, 2 train, 3 eval,
    4 images): a SplitMix64 finaliser. numpy's SeedSequence would mix as well, but gives other
    seeds, so every study already in a store would stop reproducing; this mixer stays."""
    x = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & (2**64 - 1)
    return (x ^ (x >> 29)) & (2**63 - 1)


def member_param_count(config: RunConfig, data_dim: int) -> int:
    """Trainable weights of one member (for memory estimates and cost shares)."""
    h, latent = list(config.hidden), config.latent_dim
    heads = 2 if config.family == "vae" else 1
    enc = sum((a + 1) * b for a, b in zip([data_dim] + h[:-1], h))
    dec = sum((a + 1) * b for a, b in zip([latent] + h[::-1][:-1], h[::-1]))
    return enc + (h[-1] + 1) * latent * heads + dec + (h[0] + 1) * data_dim


class _Slot:
    """One stacked parameter: rows belong to fleet members `owners`; carries its Adam state."""

    def __init__(self, tensor: Tensor, owners: list[int]):
        self.tensor = tensor.requires_grad_(True)
        self.owners = owners
        self.exp_avg = torch.zeros_like(tensor)
        self.exp_avg_sq = torch.zeros_like(tensor)
        self.step = torch.zeros((), device=tensor.device)  # Adam steps taken (same for all rows)

    def select(self, new_position: dict[int, int]) -> "_Slot | None":
        rows = [i for i, o in enumerate(self.owners) if o in new_position]
        if not rows:
            return None
        index = torch.tensor(rows, device=self.tensor.device)
        slot = _Slot(self.tensor.detach().index_select(0, index), [new_position[self.owners[i]] for i in rows])
        slot.exp_avg = self.exp_avg.index_select(0, index)
        slot.exp_avg_sq = self.exp_avg_sq.index_select(0, index)
        slot.step = self.step.clone()
        return slot


class _BernoulliNLL(torch.autograd.Function):
    """−log Bernoulli(x | sigmoid(logits)) summed over pixels: softplus(l) − x·l, (..., D) → (...).

    The same value as binary_cross_entropy_with_logits(...).sum(-1), in three passes over the
    (N, B, D) logits instead of about nine (its forward and backward make several temporaries);
    the gradient is sigmoid(l) − x."""

    @staticmethod
    def forward(ctx, logits: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(logits, x)
        return torch.nn.functional.softplus(logits).sum(-1) - torch.linalg.vecdot(logits, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        logits, x = ctx.saved_tensors
        return torch.sigmoid(logits).sub_(x).mul_(grad.unsqueeze(-1)), None


class Fleet:
    """N members of one cohort key, trained together on one device."""

    def __init__(self, members: list[Member], data_dim: int, device: torch.device | str = "cpu"):
        if not members:
            raise ValueError("a fleet needs at least one member")
        keys = {m.config.cohort_key for m in members}
        if len(keys) != 1:
            raise ValueError(f"members of different cohorts in one fleet: {keys}")
        self.device = torch.device(device)
        self.data_dim = data_dim
        self.members = sorted(members, key=lambda m: m.config.activation)  # stable: groups contiguous
        c0 = self.members[0].config
        self.family, self.likelihood, self.depth = c0.family, c0.likelihood, len(c0.hidden)
        self.slots: dict[str, _Slot] = {}
        self._build()

    # ----------------------------------------------------------------------------- construction
    def _layer_dims(self, config: RunConfig) -> list[tuple[str, int, int, str]]:
        """(name, fan_in, fan_out, init-from) of one member's layers, in init draw order."""
        h, L, D = list(config.hidden), config.latent_dim, self.data_dim
        layers = [(f"enc.{i}", a, b, "act") for i, (a, b) in enumerate(zip([D] + h[:-1], h))]
        layers.append(("head.mu", h[-1], L, "default"))
        if self.family == "vae":
            layers.append(("head.logvar", h[-1], L, "default"))
        rh = h[::-1]
        layers += [(f"dec.{i}", a, b, "act") for i, (a, b) in enumerate(zip([L] + rh[:-1], rh))]
        layers.append(("out", h[0], D, "default"))
        return layers

    def _build(self) -> None:
        members, dev = self.members, self.device
        n = len(members)
        cfgs = [m.config for m in members]
        self.widths = [max(c.hidden[i] for c in cfgs) for i in range(self.depth)]
        self.latent = max(c.latent_dim for c in cfgs)
        self.acts: list[Activation] = []
        self.groups: list[tuple[Activation, int, int]] = []
        for i, m in enumerate(members):
            if self.groups and self.groups[-1][0].name == m.config.activation:
                act, s, _ = self.groups[-1]
                self.groups[-1] = (act, s, i + 1)
            else:
                self.groups.append((get_activation(m.config.activation), i, i + 1))

        # Padded shapes of every stacked layer.
        L, D, W = self.latent, self.data_dim, self.widths
        rw = W[::-1]
        shapes = {f"enc.{i}": (a, b) for i, (a, b) in enumerate(zip([D] + W[:-1], W))}
        shapes["head"] = (W[-1], 2 * L if self.family == "vae" else L)
        shapes.update({f"dec.{i}": (a, b) for i, (a, b) in enumerate(zip([L] + rw[:-1], rw))})
        shapes["out"] = (W[0], D)
        weights = {k: torch.zeros(n, a, b) for k, (a, b) in shapes.items()}
        biases = {k: torch.zeros(n, 1, b) for k, (a, b) in shapes.items()}

        for m_i, m in enumerate(members):
            gen = torch.Generator().manual_seed(stream_seed(m.seed, 1))
            act = get_activation(m.config.activation)
            for name, fan_in, fan_out, src in self._layer_dims(m.config):
                scheme, gain = (act.init, act.gain) if src == "act" else ("default", 1.0)
                if src == "act" and m.config.init != "auto":
                    scheme = m.config.init
                w, b = init_weight(scheme, gain, fan_in, fan_out, gen)
                if name.startswith("head."):
                    col = 0 if name == "head.mu" else L
                    weights["head"][m_i, :fan_in, col:col + fan_out] = w
                    biases["head"][m_i, 0, col:col + fan_out] = b
                else:
                    weights[name][m_i, :fan_in, :fan_out] = w
                    biases[name][m_i, 0, :fan_out] = b

        everyone = list(range(n))
        for k in shapes:
            self.slots[f"{k}.w"] = _Slot(weights[k].to(dev), everyone)
            self.slots[f"{k}.b"] = _Slot(biases[k].to(dev), everyone)
        if self.likelihood == "gaussian":  # learned shared observation noise (σ-VAE), log σ = 0
            self.slots["log_sigma"] = _Slot(torch.zeros(n, 1, 1, device=dev), everyone)
        for layer in range(2 * self.depth):
            for act, s, e in self.groups:
                for pname, value in act.params.items():
                    init = value.detach().to(dev).expand(e - s, *value.shape).clone()
                    self.slots[f"act.{layer}.{act.name}.{pname}"] = _Slot(init, list(range(s, e)))
        self.steps = torch.zeros(n, dtype=torch.float64, device=dev)  # Adam steps per member
        self.train_gens = [torch.Generator(device=dev).manual_seed(stream_seed(m.seed, 2))
                           for m in members]
        self._derive()

    def _derive(self) -> None:
        """Per-member tensors that follow from `members` (rebuilt after a select)."""
        dev, cfgs = self.device, [m.config for m in self.members]
        self.kl_weight = torch.tensor([c.kl_weight for c in cfgs], device=dev)
        self.lr = torch.tensor([c.lr for c in cfgs], dtype=torch.float64, device=dev)
        self.shared_lr = cfgs[0].lr if all(c.lr == cfgs[0].lr for c in cfgs) else None
        self.warmup_epochs = torch.tensor([c.kl_warmup_epochs for c in cfgs], dtype=torch.float64)
        hid = [c.hidden for c in cfgs]
        masks = []
        for layer in range(2 * self.depth):
            i = layer if layer < self.depth else 2 * self.depth - 1 - layer
            real = torch.tensor([h[i] for h in hid], device=dev)
            full = bool((real == self.widths[i]).all())
            cols = torch.arange(self.widths[i], device=dev)
            masks.append(None if full else (cols < real[:, None]).float().unsqueeze(1))
        self.hidden_masks = masks
        real = torch.tensor([c.latent_dim for c in cfgs], device=dev)
        cols = torch.arange(self.latent, device=dev)
        self.latent_mask = (cols < real[:, None]).float().unsqueeze(1)  # (N, 1, L)
        self._latent_full = bool((real == self.latent).all())

    def select(self, keys: set[str]) -> None:
        """Keep only the members whose key is in `keys`; the rest leave the computation."""
        keep = [i for i, m in enumerate(self.members) if m.key in keys]
        new_position = {old: new for new, old in enumerate(keep)}
        self.slots = {k: s2 for k, s in self.slots.items() if (s2 := s.select(new_position))}
        self.members = [self.members[i] for i in keep]
        self.steps = self.steps[keep]
        self.train_gens = [self.train_gens[i] for i in keep]
        groups = []
        for act, s, e in self.groups:
            inside = [new_position[i] for i in range(s, e) if i in new_position]
            if inside:
                groups.append((act, inside[0], inside[-1] + 1))
        self.groups = groups
        self._derive()

    def __len__(self) -> int:
        return len(self.members)

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.members]

    def parameters(self) -> list[Tensor]:
        return [s.tensor for s in self.slots.values()]

    # ----------------------------------------------------------------------------- forward
    def _linear(self, name: str, x: Tensor) -> Tensor:
        """x (N, B, in), or (B, in) shared by every member → (N, B, out)."""
        w, b = self.slots[f"{name}.w"].tensor, self.slots[f"{name}.b"].tensor
        if x.dim() == 2:
            return torch.matmul(x, w) + b
        return torch.baddbmm(b, x, w)

    def _activate(self, layer: int, pre: Tensor) -> Tensor:
        """Each activation on its contiguous slice of members; padded units masked to zero."""
        if len(self.groups) == 1:
            pieces = [pre]
        else:  # one split (its backward is one cat), not slices (each backward a full zeros+add)
            pieces = torch.split(pre, [e - s for _, s, e in self.groups], 0)
        parts = []
        for (act, _, _), piece in zip(self.groups, pieces):
            params = {p: self.slots[f"act.{layer}.{act.name}.{p}"].tensor for p in act.params}
            parts.append(act.apply(piece, params))
        h = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        mask = self.hidden_masks[layer]
        return h if mask is None else h * mask

    def encode(self, x: Tensor, hidden: list | None = None) -> tuple[Tensor, Tensor | None]:
        """x (N, B, D) or shared (B, D) → μ, log σ² (N, B, L), zero on padded latent dims."""
        h = x
        for i in range(self.depth):
            h = self._activate(i, self._linear(f"enc.{i}", h))  # (N, B, W_i)
            if hidden is not None:
                hidden.append(h)
        stats = self._linear("head", h)  # (N, B, 2L) for a VAE, (N, B, L) for an AE
        L = self.latent
        mu, logvar = (stats[..., :L], stats[..., L:]) if self.family == "vae" else (stats, None)
        if not self._latent_full:
            mu = mu * self.latent_mask
            logvar = None if logvar is None else logvar * self.latent_mask
        return mu, logvar

    def decode(self, z: Tensor, hidden: list | None = None) -> Tensor:
        """z (N, B, L) → decoder output (N, B, D): Bernoulli logits or Gaussian means."""
        h = z
        for i in range(self.depth):
            h = self._activate(self.depth + i, self._linear(f"dec.{i}", h))
            if hidden is not None:
                hidden.append(h)
        return self._linear("out", h)

    def log_likelihood(self, x: Tensor, out: Tensor) -> Tensor:
        """log p(x | z) summed over pixels: x (N, B, D) or (B, D), out (N, B, D) → (N, B)."""
        if self.likelihood == "bernoulli":
            return -_BernoulliNLL.apply(out, x)
        log_sigma = self.slots["log_sigma"].tensor  # (N, 1, 1)
        sq = ((x - out) * torch.exp(-log_sigma)) ** 2
        return -0.5 * (sq + 2.0 * log_sigma + LOG_2PI).sum(-1)

    def loss(self, x: Tensor, eps: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-member mean loss, recon and KL over the batch: x (N, B, D), eps (N, B, L) → (N,)."""
        mu, logvar = self.encode(x)
        if self.family == "vae":
            z = mu + eps * torch.exp(0.5 * logvar)  # eps is zero on padded dims, so z is too
            kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)  # (N, B); pads add 0
        else:
            z, kl = mu, torch.zeros(mu.shape[:2], device=mu.device)
        recon = -self.log_likelihood(x, self.decode(z))  # (N, B)
        loss = recon + beta[:, None] * kl
        return loss.mean(1), recon.mean(1), kl.mean(1)

    # ----------------------------------------------------------------------------- training
    def epoch_draws(self, n: int) -> tuple[Tensor, Tensor]:
        """Each member's data order (N, n) and reparameterisation noise (N, n, L) for one epoch."""
        perms = torch.stack([torch.randperm(n, generator=g, device=self.device) for g in self.train_gens])
        eps = torch.zeros(len(self), n, self.latent, device=self.device)
        if self.family == "vae":
            for i, (m, g) in enumerate(zip(self.members, self.train_gens)):
                eps[i, :, :m.config.latent_dim] = torch.randn(
                    n, m.config.latent_dim, generator=g, device=self.device)
        return perms, eps

    def beta(self, step: int, steps_per_epoch: int) -> Tensor:
        """KL weight of each member at global step `step` (0-based), with linear warm-up."""
        warm = (self.warmup_epochs * steps_per_epoch).to(self.device)
        ramp = torch.where(warm > 0, ((step + 1) / warm.clamp(min=1)).clamp(max=1.0), 1.0)
        return self.kl_weight * ramp.float()

    def train_step(self, x: Tensor, eps: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        loss, recon, kl = self.loss(x, eps, beta)
        for p in self.parameters():
            p.grad = None
        loss.sum().backward()  # members share nothing, so each gets exactly its own gradient
        self.adam_step()
        return loss.detach(), recon.detach(), kl.detach()

    @torch.no_grad()
    def adam_step(self) -> None:
        """torch.optim.Adam's update (default betas, eps, no weight decay), per member.

        Every row of a stacked tensor is one member's, and Adam is elementwise, so one update
        over the stacked tensors is N independent Adams. With one learning rate for the whole
        cohort (the usual case) that is PyTorch's own fused Adam kernel over every tensor;
        with per-member learning rates, the same formula with per-row step sizes."""
        b1, b2 = ADAM_BETAS
        self.steps += 1
        slots = [s for s in self.slots.values() if s.tensor.grad is not None]
        torch._foreach_add_([s.step for s in slots], 1.0)
        if self.shared_lr is not None and FUSED_ADAM:
            torch._fused_adam_(
                [s.tensor for s in slots], [s.tensor.grad for s in slots],
                [s.exp_avg for s in slots], [s.exp_avg_sq for s in slots], [],
                [s.step for s in slots], amsgrad=False, lr=self.shared_lr, beta1=b1, beta2=b2,
                weight_decay=0.0, eps=ADAM_EPS, maximize=False, grad_scale=None, found_inf=None)
            return
        step_size = (self.lr / (1.0 - b1 ** self.steps)).float()  # (N,)
        bc2_sqrt = torch.sqrt(1.0 - b2 ** self.steps).float()
        for slot in slots:
            p, g = slot.tensor, slot.tensor.grad
            shape = (-1,) + (1,) * (p.dim() - 1)
            own = slot.owners if len(slot.owners) != len(self) else slice(None)
            slot.exp_avg.lerp_(g, 1.0 - b1)
            slot.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (slot.exp_avg_sq.sqrt() / bc2_sqrt[own].view(shape)).add_(ADAM_EPS)
            p.sub_(slot.exp_avg.div(denom).mul_(step_size[own].view(shape)))
