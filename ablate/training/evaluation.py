"""Batched evaluation of every member of a fleet: the metric table's test metrics and their
validation twins.

Owns: the evaluation passes (single-sample ELBO, posterior moments and hidden-unit ranges, the
IWAE bound, I(x; z), the linear probe, disentanglement on data with factors), chunk sizes that
fit the device's memory, and each member's evaluation noise (its EVAL stream, the same at every
evaluation). Does not own: the math of each metric (estimators.py, disentanglement.py), the
metric table (metrics.py) or images (samples.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from ablate import timing
from ablate.nets.models import activation_floats
from ablate.streams import Stream
from ablate.study.metrics import DISENTANGLEMENT, val_name
from ablate.training import estimators as M
from ablate.training.disentanglement import scores
from ablate.training.fleet import Fleet, generators
from ablate.training.splits import DeviceData

NOISE_BLOCK = 64  # images per draw of a member's noise (ImageNoise)
PROBE_MAX_TRAIN = 5000  # latent means of at most this many training images fit the probe
MI_MAX_POINTS = 1000  # the MI estimate uses the first this-many test images


def memory_budget(device: torch.device) -> int:
    """Bytes an evaluation chunk may use."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(free // 4, 64 << 20)
    # On a CPU, chunks of ~64 MB run IWAE twice as fast as 1 GB ones (quick.yaml's 180 members:
    # 5.0 s against 10.3 s): temporaries that stay small are reused from cache, large ones fault
    # in fresh pages at every allocation.
    return 64 << 20


def chunk(n: int, members: int, per_item_floats: int, budget: int) -> int:
    return max(1, min(n, budget // max(1, members * per_item_floats * 4)))


def hidden_floats(fleet: Fleet) -> int:
    """Hidden values per example of the cohort's widest member (evaluation chunk sizes)."""
    return max(activation_floats(m.config, fleet.shape) for m in fleet.members)


def member_noise(fleet: Fleet, gens: list[torch.Generator], *lead: int) -> Tensor:
    """Standard normal noise (N, *lead, L) from each member's own generator; zero on padding."""
    eps = torch.zeros(len(fleet), *lead, fleet.latent, device=fleet.device)
    for i, (m, g) in enumerate(zip(fleet.members, gens)):
        eps[i, ..., :m.config.latent_dim] = torch.randn(
            *lead, m.config.latent_dim, generator=g, device=fleet.device)
    return eps


def eval_gens(fleet: Fleet) -> list[torch.Generator]:
    """Fresh evaluation generators: the same noise at every evaluation of a member."""
    return generators(fleet.members, Stream.EVAL, fleet.device)


class ImageNoise:
    """Each member's noise for a pass over images, image by image: `take(c)` gives the next c
    images' noise (N, c, *lead, L). It is drawn from the members' generators `gens` in blocks of
    NOISE_BLOCK images, so image j's noise is the same however a pass is chunked —
    and chunk sizes depend on the cohort's size and the device's free memory, which must not
    change a member's numbers."""

    def __init__(self, fleet: Fleet, gens: list[torch.Generator], *lead: int):
        self.fleet, self.lead, self.gens = fleet, lead, gens
        self.left = torch.zeros(len(fleet), 0, *lead, fleet.latent, device=fleet.device)

    def take(self, c: int) -> Tensor:
        blocks = [self.left]
        while sum(b.shape[1] for b in blocks) < c:
            blocks.append(member_noise(self.fleet, self.gens, NOISE_BLOCK, *self.lead))
        drawn = torch.cat(blocks, 1) if len(blocks) > 1 else self.left
        self.left = drawn[:, c:]
        return drawn[:, :c]


@torch.no_grad()
def evaluate_elbo(fleet: Fleet, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Single-sample negative ELBO, recon and KL per image on `x`, each (N,)."""
    n, N = len(x), len(fleet)
    per_item = 3 * fleet.data_dim + 2 * hidden_floats(fleet) + 6 * fleet.latent
    c = chunk(n, N, per_item, memory_budget(fleet.device))
    noise = ImageNoise(fleet, eval_gens(fleet))
    recon = torch.zeros(N, device=fleet.device)
    kl = torch.zeros(N, device=fleet.device)
    for s in range(0, n, c):
        xb = x[s:s + c]  # (c, D), shared by all members
        mu, logvar = fleet.encode(xb)
        if fleet.family.posterior:
            z = mu + noise.take(len(xb)) * torch.exp(0.5 * logvar)
            kl += M.kl_per_dim(mu, logvar).sum((1, 2))
        else:
            z = mu
        recon -= fleet.log_likelihood(xb, fleet.decode(z)).sum(1)
    recon, kl = recon / n, kl / n
    return recon + (kl if fleet.family.posterior else 0.0), recon, kl


@torch.no_grad()
def evaluate_final(fleet: Fleet, data: DeviceData, iwae_samples: int) -> dict[str, dict]:
    """Every test metric of the metric table for each member on the test split, and on the
    validation split as its val_ twins: {key: {metric: value}}. The linear probe is fitted
    once per member and scored on both splits."""
    results, mu_test = evaluate_split(fleet, data.x_test, iwae_samples)
    scored = [("probe_accuracy", mu_test, data.y_test)]
    codes = {"test": mu_test}
    if data.x_val is not None:
        val, mu_val = evaluate_split(fleet, data.x_val, iwae_samples)
        for key, row in val.items():
            results[key].update({val_name(k): v for k, v in row.items() if k != "kl_per_dim"})
        scored.append(("val_probe_accuracy", mu_val, data.y_val))
        codes["val"] = mu_val
    with timing.phase("evaluation/linear probe"):
        probes = _probe(fleet, data, [(mu, y) for _, mu, y in scored])
    for m, accuracies in zip(fleet.members, probes):
        results[m.key].update({name: a for (name, _, _), a in zip(scored, accuracies)})
    for split, mu in codes.items():
        with timing.phase("evaluation/disentanglement"):
            rows = _disentanglement(fleet, mu, data.factors.get(split), data.dci_estimators)
        for m, row in zip(fleet.members, rows):
            results[m.key].update({k if split == "test" else val_name(k): v for k, v in row.items()
                                   if split == "test" or k in DISENTANGLEMENT})  # per factor: test only
    return results


def _disentanglement(fleet: Fleet, mu: Tensor, factors: np.ndarray | None,
                     estimators: int | None) -> list[dict[str, float]]:
    """Per member: MIG, SAP and DCI (`estimators` boosting stages) of its code μ (N, n, L)
    against the split's ground-truth factors (n, F), with MIG and the trees' accuracy per
    factor (`disentanglement.scores`); NaN on a dataset without factors."""
    if factors is None:
        return [dict.fromkeys(DISENTANGLEMENT, float("nan")) for _ in fleet.members]
    mu = mu.cpu().numpy()
    # The trees release the GIL while they grow: members are scored on every thread torch
    # trains with (each member's scores are its own, whichever thread computes them).
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        return list(pool.map(lambda i: scores(mu[i, :, :fleet.members[i].config.latent_dim], factors,
                                              n_estimators=estimators), range(len(fleet))))


def evaluate_split(fleet: Fleet, x: Tensor, iwae_samples: int) -> tuple[dict[str, dict], Tensor]:
    """The metrics of one split but the probe, and its posterior means μ (N, n, L)."""
    N, L, dev, vae = len(fleet), fleet.latent, fleet.device, fleet.family.posterior
    n = len(x)
    budget = memory_budget(dev)
    real_latent = fleet.latent_mask[:, 0, :]  # (N, L)

    # Pass 1: posterior moments and hidden-unit ranges (encoder on x, decoder on z = μ).
    per_item = 2 * fleet.data_dim + 2 * hidden_floats(fleet) + 4 * L
    c = chunk(n, N, per_item, budget)
    mus, logvars, lo, hi = [], [], None, None
    with timing.phase("evaluation/codes and dead units"):
        for s in range(0, n, c):
            hidden: list[Tensor] = []  # (N, observations, units) per activation
            mu, logvar = fleet.encode(x[s:s + c], hidden)
            fleet.decode(mu, hidden)
            low = torch.cat([h.amin(1) for h in hidden], -1)  # (N, U) every unit of every layer
            high = torch.cat([h.amax(1) for h in hidden], -1)
            lo = low if lo is None else torch.minimum(lo, low)
            hi = high if hi is None else torch.maximum(hi, high)
            mus.append(mu)
            logvars.append(logvar)
    mu = torch.cat(mus, 1)  # (N, n, L)
    logvar = torch.cat(logvars, 1) if vae else None
    real_units = fleet.model.real_units()  # (N, U)

    out = {"test_nelbo": None}
    with timing.phase("evaluation/ELBO"):
        out["test_nelbo"], out["test_recon"], out["test_kl"] = evaluate_elbo(fleet, x)
    out["active_units"] = M.active_units(mu, real_latent).float()
    out["dead_units"] = M.dead_fraction(lo, hi, real_units)
    nan = torch.full((N,), float("nan"), device=dev)
    if vae:
        out["kl_per_dim"] = M.kl_per_dim(mu, logvar).mean(1)  # (N, L)
        with timing.phase("evaluation/IWAE NLL"):
            out["test_nll"] = -_iwae(fleet, x, mu, logvar, iwae_samples, budget)
        with timing.phase("evaluation/mutual information"):
            out["mutual_info"] = _mutual_info(fleet, mu, logvar, budget)
    else:
        out["test_kl"], out["test_nll"], out["mutual_info"] = nan, nan, nan
        out["kl_per_dim"] = torch.full((N, L), float("nan"), device=dev)

    results = {}
    for i, m in enumerate(fleet.members):
        Lm = m.config.latent_dim
        row = {k: float(v[i]) for k, v in out.items() if k != "kl_per_dim"}
        row["kl_per_dim"] = [float(v) for v in out["kl_per_dim"][i, :Lm]]
        results[m.key] = row
    return results, mu


def _iwae(fleet: Fleet, x: Tensor, mu: Tensor, logvar: Tensor, k: int, budget: int) -> Tensor:
    """IWAE lower bound on log p(x) with k importance samples, mean over x: (N,)."""
    N, n = mu.shape[:2]
    per_item = k * (3 * fleet.data_dim + hidden_floats(fleet) + 4 * fleet.latent)
    c = chunk(n, N, per_item, budget)
    noise = ImageNoise(fleet, eval_gens(fleet), k)
    mask = fleet.latent_mask.unsqueeze(1)  # (N, 1, 1, L)
    total = torch.zeros(N, device=fleet.device)
    for s in range(0, n, c):
        m, lv, xb = mu[:, s:s + c].unsqueeze(1), logvar[:, s:s + c].unsqueeze(1), x[s:s + c]
        cb = len(xb)
        eps = noise.take(cb).transpose(1, 2)  # (N, k, c, L)
        z = m + eps * torch.exp(0.5 * lv)
        out = fleet.decode(z.reshape(N, k * cb, -1))  # (N, k·c, D)
        log_px = fleet.log_likelihood(xb, out.view(N, k, cb, -1))  # x broadcast, not repeated: (N, k, c)
        log_ratio = (M.log_prior_ratio(z, eps, lv) * mask).sum(-1)  # log p(z) − log q(z|x): (N, k, c)
        total += M.iwae_bound(log_px + log_ratio, dim=1).sum(1)
    return total / n


def _mutual_info(fleet: Fleet, mu: Tensor, logvar: Tensor, budget: int) -> Tensor:
    """I(x; z) under the aggregate posterior of the first MI_MAX_POINTS test images: (N,)."""
    N = len(fleet)
    mu, logvar = mu[:, :MI_MAX_POINTS], logvar[:, :MI_MAX_POINTS]
    n = mu.shape[1]
    gens = eval_gens(fleet)
    z = mu + member_noise(fleet, gens, n) * torch.exp(0.5 * logvar)  # (N, n, L)
    mask = fleet.latent_mask  # (N, 1, L)
    self_term = (M.log_normal(z, mu, logvar) * mask).sum(-1)  # (N, n)
    c = chunk(n, N, 2 * n, budget)
    cross = [torch.logsumexp(M.log_normal_pairs(z[:, s:s + c], mu, logvar, mask), dim=2)
             for s in range(0, n, c)]  # (N, c) each
    return M.mutual_information(self_term, torch.cat(cross, 1), n)


def _probe(fleet: Fleet, data: DeviceData, splits: list[tuple[Tensor, np.ndarray | None]]) -> list[list[float]]:
    """Per member: the linear-probe accuracy on μ of each split (μ (N, n, L), labels), from one
    probe fitted on training images (NaN without labels); every member's probe is fitted at
    once (estimators.probe_accuracies)."""
    N = len(fleet)
    if data.y_train is None or all(y is None for _, y in splits):
        return [[float("nan")] * len(splits) for _ in range(N)]
    x = data.x_train[:PROBE_MAX_TRAIN]
    c = chunk(len(x), N, 2 * fleet.data_dim + hidden_floats(fleet), memory_budget(fleet.device))
    mu_train = torch.cat([fleet.encode(x[s:s + c])[0] for s in range(0, len(x), c)], 1)
    mask = fleet.latent_mask[:, 0, :]
    return M.probe_accuracies(mu_train, mask, data.y_train[:PROBE_MAX_TRAIN], splits).tolist()
