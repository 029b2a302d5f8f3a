"""What a member draws: sample images, the quality of its samples, and the shapes its learnable
activations learned.

Owns: reconstructions of fixed test images, prior samples, the latent manifold and latent
traversals (uint8), the
sample-quality pass (FID, KID, precision, recall, class coverage against the real images, from
each member's SAMPLES stream), learned activation shapes and values, and what the learnable
activations hold epoch by epoch (`activation_state`). Does not own: the
feature-space math (quality.py) or the classifier (classifier.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ablate.nets.activations import SHAPE_GRID
from ablate.nets.nonlinear import Activation, acon
from ablate.streams import Stream
from ablate.training import quality
from ablate.training.evaluation import ImageNoise, chunk, hidden_floats, member_noise, memory_budget
from ablate.training.fleet import Fleet, generators
from ablate.training.splits import DeviceData


@torch.no_grad()
def learned_shapes(fleet: Fleet) -> dict[str, dict[str, np.ndarray]]:
    """Per member with a learnable activation: its shape f(x) on SHAPE_GRID in each hidden
    layer (a per-unit activation averaged over the member's real units), `shape` as trained
    and `shape0` as initialised — `dec_shape`, `dec_shape0` for the decoder's layers: float32
    (layers, len(SHAPE_GRID)) — and the learned values of activation k's parameter p as
    `act{k}_{p}` (one per layer, or per unit)."""
    grid = torch.tensor(SHAPE_GRID, device=fleet.device)
    out: dict[str, dict[str, list]] = {}
    acts = fleet.model.acts
    for index, layer in enumerate(acts):
        side = "dec_" if index >= len(acts) // 2 else ""
        for act, s, e in layer.groups:
            if not act.learnable:
                continue
            for i in range(s, e):
                width = layer.width if layer.real is None else int(layer.real[i])
                x = grid.view(1, -1, 1).expand(1, len(grid), width)
                trained = {k: v[..., :width] if k in act.unit_params else v
                           for k, v in layer.params(act, i, i + 1).items()}
                first = {k: v.to(fleet.device) for k, v in act.initial(1, width).items()}
                curves = out.setdefault(fleet.members[i].key, {})
                curves.setdefault(f"{side}shape", []).append(_shape(act, x, trained, layer.unit_switch.get(i)))
                curves.setdefault(f"{side}shape0", []).append(act.apply(x, first)[0].mean(-1))
                for k, v in trained.items():  # the learned values themselves, e.g. act0_alpha
                    curves[f"act{index}_{k}"] = [v[0]]
    return {key: {k: (torch.stack(v) if k.endswith(("shape", "shape0")) else v[0]).float().cpu().numpy()
                  for k, v in c.items()} for key, c in out.items()}


def _shape(act: Activation, x: Tensor, params: dict[str, Tensor], switch: Tensor | None) -> Tensor:
    """An activation's mean shape over its units on the grid x (1, points, units). One whose
    switch comes from its input (meta_acon) is ACON-C with each unit's β as it was on the last
    epoch's training examples (`switch`), not β of the grid fed to every unit at once."""
    if act.switch is not None and "beta" not in params and switch is not None:
        return acon(x, {**params, "beta": switch[None]})[0].mean(-1)
    return act.apply(x, params)[0].mean(-1)


@torch.no_grad()
def activation_state(fleet: Fleet) -> list[dict[str, float]]:
    """Per member, at the end of an epoch: the switch of its ACON activations as `beta_<layer>`
    (acon's β, meta_acon's computed β: the mean over the epoch's training passes, examples and
    real units) and the mixture weights of a blend as `mix_<base>_<layer>`, where <layer> is the
    layer the activation follows (`enc.0`). Takes the switches, so each epoch counts its own."""
    out: list[dict[str, float]] = [{} for _ in fleet.members]
    for layer in getattr(fleet.model, "acts", []):
        for i, beta in layer.take_switches().items():
            out[i][f"beta_{layer.after}"] = beta
        for act, s, e in layer.groups:
            if act.mixture is not None:
                for base, w in act.mixture(layer.params(act, s, e)).items():
                    for i, v in zip(range(s, e), w.tolist()):
                        out[i][f"mix_{base}_{layer.after}"] = v
    return out


@torch.no_grad()
def sample_quality(fleet: Fleet, data: DeviceData) -> dict[str, dict[str, float]]:
    """Per member: fid, kid, precision, recall and class_coverage of as many prior samples
    (decoded means, from the member's SAMPLES stream) as real test images in the judge's feature
    space, and their val_ twins against the validation images."""
    judge, N = data.judge, len(fleet)
    gens = generators(fleet.members, Stream.SAMPLES, fleet.device)
    out: dict[str, dict[str, float]] = {m.key: {} for m in fleet.members}
    for split, real in data.real.items():
        n = len(real)
        c = chunk(n, N, 2 * fleet.data_dim + hidden_floats(fleet) + fleet.latent, memory_budget(fleet.device))
        feats, preds = [[] for _ in range(N)], [[] for _ in range(N)]
        noise = ImageNoise(fleet, gens)
        for s in range(0, n, c):
            images = _means(fleet, fleet.decode(noise.take(min(c, n - s))))
            for i in range(N):
                feats[i].append(judge.features(images[i]))
                preds[i].append(judge.predict(images[i]))
        prefix = "" if split == "test" else "val_"
        r_real = quality.knn_radius(real)  # the real manifold: once per split, not per member
        for i, m in enumerate(fleet.members):
            fake = np.concatenate(feats[i])
            if not np.isfinite(fake).all():  # a diverged decoder: nothing to measure
                continue
            precision, recall = quality.precision_recall(real, fake, r_real=r_real)
            out[m.key].update({f"{prefix}fid": quality.fid(real, fake), f"{prefix}kid": quality.kid(real, fake),
                               f"{prefix}precision": precision, f"{prefix}recall": recall,
                               f"{prefix}class_coverage": quality.coverage(np.concatenate(preds[i]), judge.classes)})
    return out


def _means(fleet: Fleet, out: Tensor) -> Tensor:
    return fleet.family.mean_image(out, fleet.likelihood)


RECON_IMAGES = 8  # the first this-many test images are reconstructed by every member
PRIOR_IMAGES = 8  # decoded draws from the prior per member
MANIFOLD_SIDE = 10  # latent_dim 2: a side × side grid over the prior's quantiles
TRAVERSAL_STEPS = 7  # values of each latent dimension in a traversal
TRAVERSAL_CODES = 256  # test images whose codes set each dimension's traversed range


@torch.no_grad()
def traversals(fleet: Fleet, x_test: Tensor) -> Tensor:
    """Each member's latent traversal (N, L·TRAVERSAL_STEPS, D): the code μ of the first test
    image with one dimension at a time set to evenly spaced values from its 5th to its 95th
    percentile over the codes of the first TRAVERSAL_CODES test images (one row of images per
    dimension; padding dimensions stay 0)."""
    N, L, steps = len(fleet), fleet.latent, TRAVERSAL_STEPS
    mu = fleet.encode(x_test[:TRAVERSAL_CODES])[0]  # (N, n, L)
    lo, hi = torch.quantile(mu, 0.05, dim=1), torch.quantile(mu, 0.95, dim=1)  # (N, L)
    t = torch.linspace(0.0, 1.0, steps, device=fleet.device)
    values = lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * t  # (N, L, steps)
    z = mu[:, :1].expand(N, L * steps, L).clone().view(N, L, steps, L)
    for d in range(L):
        z[:, d, :, d] = values[:, d]
    return fleet.decode(z.view(N, L * steps, L) * fleet.latent_mask)


@torch.no_grad()
def sample_images(fleet: Fleet, x_test: Tensor, traverse: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Per member: decoded means of reconstructions of fixed test images, prior samples and,
    for a 2-d latent space, the decoded latent manifold; with `traverse` (data with factors), a
    family with a code also gets its latent traversal (`traversals`, its own latent_dim rows);
    as uint8 (0–255) rows of D pixels."""
    N, L, dev = len(fleet), fleet.latent, fleet.device
    coded = "reconstruction" in fleet.family.measures  # a GAN has no encoder: nothing to reconstruct
    mu = fleet.encode(x_test[:RECON_IMAGES])[0] if coded else torch.zeros(N, RECON_IMAGES, L, device=dev)
    recon = fleet.decode(mu)  # the posterior mean, as is usual for reconstructions
    gens = generators(fleet.members, Stream.IMAGES, dev)
    prior = fleet.decode(member_noise(fleet, gens, PRIOR_IMAGES))
    side = torch.linspace(0.05, 0.95, MANIFOLD_SIDE, dtype=torch.float64)
    q = torch.special.ndtri(side).float().to(dev)  # standard-normal quantiles
    grid = torch.zeros(MANIFOLD_SIDE * MANIFOLD_SIDE, L, device=dev)
    if L >= 2:
        grid[:, 0] = q.repeat(MANIFOLD_SIDE)  # z1 left → right
        grid[:, 1] = q.flip(0).repeat_interleave(MANIFOLD_SIDE)  # z2 bottom → top
    manifold = fleet.decode(grid.expand(N, -1, -1) * fleet.latent_mask)

    def to_uint8(out: Tensor) -> np.ndarray:
        return (_means(fleet, out) * 255).round().to(torch.uint8).cpu().numpy()

    finite = torch.isfinite(prior).flatten(1).all(1).tolist()
    recon, prior, manifold = to_uint8(recon), to_uint8(prior), to_uint8(manifold)
    walks = to_uint8(traversals(fleet, x_test)) if coded and traverse else None
    result = {}
    for i, m in enumerate(fleet.members):
        result[m.key] = {"recon": recon[i]} if coded else {}
        if walks is not None:
            result[m.key]["traversal"] = walks[i, :m.config.latent_dim * TRAVERSAL_STEPS]
        if fleet.family.prior and finite[i]:  # an AE has no prior to sample
            result[m.key]["prior"] = prior[i]
            if m.config.latent_dim == 2:
                result[m.key]["manifold"] = manifold[i]
    return result
