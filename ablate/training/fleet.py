"""The fleet: a cohort of independent models (MLP or conv, of one family) trained as one.
Its invariants and their tests: docs/architecture.md, "The fleet".

Owns: the members (sorted by activation, so each activation acts on one contiguous slice; a
user's module's members in vmapped groups, nets/plugin.py),
their random generators, one training step as their family takes it, the stacked Adam that is
N independent Adams, and members leaving (failure, pruning). Does not own: the layers
(layers.py), the model built from them (models.py), the family's loss (families.py), the epoch
loop (loop.py) or evaluation (evaluation.py).

Invariants (tested for MLP and conv models):
- A member's numbers do not depend on the other members: it draws its init, data order and
  noise from generators seeded by its own seed only; members share no parameter, the loss is
  a sum over members, and Adam is elementwise.
- Members narrower than the widest (hidden width, latent size) are zero-padded; outputs of
  padded units are masked to zero, so padded weights get exactly zero gradient and stay zero.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor
from torch.optim.adam import adam

from ablate.nets.families import FAMILY
from ablate.nets.layers import Groups, Slot
from ablate.nets.models import build_model, flat_shape
from ablate.nets.nonlinear import get_activation
from ablate.nets.plugin import PluginModel
from ablate.streams import Stream, stream_seed
from ablate.training.gradients import GradientFlow
from ablate.study.schema import RunConfig

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
FUSED_ADAM = ("cpu", "cuda")
"""Devices on which a cohort that shares one lr takes PyTorch's fused Adam kernel, through
torch.optim.adam's functional form; elsewhere, or with per-member lrs, the same update
written out per row (tests run both paths against torch.optim.Adam)."""


@dataclass(frozen=True)
class Member:
    """One model to train: a configuration and a seed, under a key unique in its study."""

    key: str
    config: RunConfig
    seed: int


def generators(members: list[Member], stream: Stream, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """Each member's generator of one of its random streams (streams.py), on `device`."""
    return [torch.Generator(device=device).manual_seed(stream_seed(m.seed, stream)) for m in members]


def activation_groups(names: list[str]) -> Groups:
    """(activation, start, end) for each run of equal names in members' order."""
    groups: Groups = []
    for i, name in enumerate(names):
        if groups and groups[-1][0].name == name:
            act, s, _ = groups[-1]
            groups[-1] = (act, s, i + 1)
        else:
            groups.append((get_activation(name), i, i + 1))
    return groups


class Fleet:
    """N members of one cohort key, trained together on one device."""

    def __init__(self, members: list[Member], shape: tuple[int, ...] | int,
                 device: torch.device | str = "cpu"):
        if not members:
            raise ValueError("a fleet needs at least one member")
        keys = {m.config.cohort_key for m in members}
        if len(keys) != 1:
            raise ValueError(f"members of different cohorts in one fleet: {keys}")
        self.device = torch.device(device)
        self.shape = flat_shape(shape)  # one example: (C, H, W) images, or (D,) flat data
        self.data_dim = math.prod(self.shape)
        # stable sort: each encoder activation's members are contiguous (decoder ones in runs)
        self.members = sorted(members, key=lambda m: (m.config.activation, m.config.decoder))
        c0 = self.members[0].config
        self.family, self.likelihood = FAMILY[c0.family], c0.likelihood
        self.bf16 = c0.dtype == "bf16"
        self._build()

    def _build(self) -> None:
        members, dev = self.members, self.device
        pairs = [(m.config, g) for m, g in zip(members, generators(members, Stream.INIT))]
        if members[0].config.module:  # a user's module: its members' groups are its own
            self.model = PluginModel(pairs, self.shape, dev)
        else:
            groups = (activation_groups([m.config.activation for m in members]),
                      activation_groups([m.config.decoder for m in members]))
            self.model = build_model(pairs, self.shape, groups, dev)
        self.latent = self.model.latent
        self._slots()
        self.train_gens = generators(members, Stream.TRAIN, dev)
        self.mask_gens = generators(members, Stream.MASKS, dev)
        self._derive()

    def _slots(self) -> None:
        """Every stacked parameter, and each of the family's two networks' by its name."""
        self.slots = self.model.slots()
        self.networks = {name: [s for k, s in self.slots.items() if self.model.network(k) == i]
                         for i, name in enumerate(self.family.networks)}

    def _derive(self) -> None:
        """Per-member tensors that follow from `members` (rebuilt after a select), and a fresh
        record of their gradient flow."""
        dev, cfgs = self.device, [m.config for m in self.members]
        self.flow = GradientFlow(len(self.members), getattr(self.model, "layers", {}))
        self.kl_weight = torch.tensor([c.kl_weight for c in cfgs], device=dev)
        self.lr = torch.tensor([c.lr for c in cfgs], dtype=torch.float64, device=dev)
        self.shared_lr = cfgs[0].lr if all(c.lr == cfgs[0].lr for c in cfgs) else None
        self.warmup_epochs = torch.tensor([c.kl_warmup_epochs for c in cfgs], dtype=torch.float64)
        self.noise = [c.noise for c in cfgs]
        self.sparsity = torch.tensor([c.sparsity for c in cfgs], device=dev)
        self.contraction = torch.tensor([c.contraction for c in cfgs], device=dev)

    def select(self, keys: set[str]) -> None:
        """Keep only the members whose key is in `keys`; the rest leave the computation."""
        keep = [i for i, m in enumerate(self.members) if m.key in keys]
        new_position = {old: new for new, old in enumerate(keep)}
        self.model.select(new_position)
        self._slots()
        self.members = [self.members[i] for i in keep]
        self.train_gens = [self.train_gens[i] for i in keep]
        self.mask_gens = [self.mask_gens[i] for i in keep]
        self._derive()

    def __len__(self) -> int:
        return len(self.members)

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.members]

    def parameters(self) -> list[Tensor]:
        return [s.tensor for s in self.slots.values()]

    # ----------------------------------------------------------------------------- forward
    @property
    def latent_mask(self) -> Tensor:
        """(N, 1, L): 1 on each member's real latent dims, 0 on padding."""
        return self.model.latent_mask

    def encode(self, x: Tensor, hidden: list | None = None) -> tuple[Tensor, Tensor | None]:
        """x (N, B, D) or shared (B, D) → μ, log σ² (N, B, L), zero on padded latent dims;
        `hidden` collects every activation's output as (N, observations, units). Outputs are
        float32 whatever the precision of the computation."""
        mu, logvar = self.model.encode(x, hidden)
        return mu.float(), None if logvar is None else logvar.float()

    def decode(self, z: Tensor, hidden: list | None = None) -> Tensor:
        """z (N, B, L) → decoder output (N, B, D): Bernoulli logits or Gaussian means (float32)."""
        return self.model.decode(z, hidden).float()

    def discriminate(self, x: Tensor) -> Tensor:
        """A GAN's discriminator logits (N, B) of images x (N, B, D) (float32)."""
        return self.model.discriminate(x).float()

    @contextmanager
    def training(self) -> Iterator[None]:
        """The forward passes of a training step: dropout masks from each member's MASKS
        stream, and the cohort's dtype — bf16: matmuls and convolutions autocast to
        bfloat16 (weights, losses and Adam stay float32; evaluation never autocasts)."""
        self.model.rng = self.mask_gens
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                yield
        finally:
            self.model.rng = None

    def log_likelihood(self, x: Tensor, out: Tensor) -> Tensor:
        """log p(x | z) summed over pixels: x (N, B, D) or (B, D), out (N, B, D) → (N, B)."""
        return self.model.log_likelihood(x, out)

    def loss(self, x: Tensor, eps: Tensor, beta: Tensor,
             x_in: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The family's per-member mean loss and its two parts over the batch (families.py)."""
        return self.family.loss(self, x, eps, beta, x_in)

    # ----------------------------------------------------------------------------- training
    def epoch_draws(self, n: int) -> tuple[Tensor, Tensor]:
        """Each member's data order (N, n) and reparameterisation noise (N, n, L) for one epoch."""
        perms = torch.stack([torch.randperm(n, generator=g, device=self.device) for g in self.train_gens])
        eps = torch.zeros(len(self), n, self.latent, device=self.device)
        if self.family.prior:  # a VAE's reparameterisation noise, a GAN's generator input
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
        """One training step of every member on its batch x (N, B, D), as its family trains;
        dropout and a dae's corruption only here (evaluation sees the clean input and the
        whole network). Returns the loss and its two parts (the family's `parts`)."""
        return self.family.train_step(self, x, eps, beta)

    def descend(self, loss: Tensor, slots: list[Slot] | None = None,
                betas: tuple[float, float] = ADAM_BETAS) -> None:
        """One Adam step of `slots` (default: every one) on the members' summed loss (N,)."""
        for p in self.parameters():
            p.grad = None
        loss.sum().backward()  # members share nothing, so each gets exactly its own gradient
        stepped = None if slots is None else {id(s) for s in slots}
        self.flow.add({k: s for k, s in self.slots.items() if stepped is None or id(s) in stepped})
        self.adam_step(slots, betas)

    @torch.no_grad()
    def adam_step(self, slots: list[Slot] | None = None, betas: tuple[float, float] = ADAM_BETAS) -> None:
        """torch.optim.Adam's update (no weight decay) of `slots` (default: every one with a
        gradient), per member.

        Every row of a stacked tensor is one member's, and Adam is elementwise, so one update
        over the stacked tensors is N independent Adams. With one learning rate for the whole
        cohort (the usual case) that is torch.optim.adam's functional form with PyTorch's fused
        kernel over every tensor; with per-member learning rates, the same formula with
        per-row step sizes."""
        b1, b2 = betas
        slots = [s for s in (slots or self.slots.values()) if s.tensor.grad is not None]
        if self.shared_lr is not None and self.device.type in FUSED_ADAM:
            adam([s.tensor for s in slots], [s.tensor.grad for s in slots],
                 [s.exp_avg for s in slots], [s.exp_avg_sq for s in slots], [],
                 [s.step for s in slots], fused=True, amsgrad=False, beta1=b1, beta2=b2,
                 lr=self.shared_lr, weight_decay=0.0, eps=ADAM_EPS, maximize=False)
            return  # it counted the steps
        for slot in slots:
            slot.step.add_(1.0)
            t = slot.step.double()  # steps this slot took (every row the same)
            step_size = (self.lr / (1.0 - b1 ** t)).float()  # (N,)
            bc2_sqrt = torch.sqrt(1.0 - b2 ** t).float()
            p, g = slot.tensor, slot.tensor.grad
            shape = (-1,) + (1,) * (p.dim() - 1)
            own = slot.owners if len(slot.owners) != len(self) else slice(None)
            slot.exp_avg.lerp_(g, 1.0 - b1)
            slot.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (slot.exp_avg_sq.sqrt() / bc2_sqrt.view(())).add_(ADAM_EPS)
            p.sub_(slot.exp_avg.div(denom).mul_(step_size[own].view(shape)))
