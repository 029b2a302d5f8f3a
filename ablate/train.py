"""The epoch loop for one cohort, and batched evaluation of every member on the test split.

Owns: minibatches gathered by index on the device, per-epoch records, divergence (a member
whose loss turns NaN/inf fails alone and leaves the computation), stopping members on request
(pruning), final metrics, each cohort's name (`cohort_id`) and wall time. Does not own: the
model's insides (fleet.py), the metric definitions (metrics.py), or the study store
(runner.py).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ablate import estimators as M
from ablate import quality
from ablate.activations import SHAPE_GRID
from ablate.checkpoints import CohortCheckpoint
from ablate.classifier import Judge
from ablate.data import Dataset
from ablate.fleet import Fleet, Member, generators
from ablate.streams import Stream
from ablate.families import Family
from ablate.models import activation_floats, param_count
from ablate.trained import member_weights
from ablate.metrics import val_name

PROBE_MAX_TRAIN = 5000  # latent means of at most this many training images fit the probe
MI_MAX_POINTS = 1000  # the MI estimate uses the first this-many test images


@dataclass
class DeviceData:
    """A dataset's splits as tensors on the training device (the whole set lives there)."""

    x_train: Tensor
    x_test: Tensor
    y_train: np.ndarray | None
    y_test: np.ndarray | None
    x_val: Tensor | None = None
    """None: the study has no validation split (then epochs record training numbers only)."""
    y_val: np.ndarray | None = None
    shape: tuple[int, ...] | None = None
    """One example's shape: (C, H, W) for images; None: flat rows of x_train.shape[1] values."""
    judge: Judge | None = None
    """The dataset's classifier (sample quality); None without labels."""
    real: dict[str, np.ndarray] = field(default_factory=dict)
    """The judge's features of the first QUALITY_SAMPLES images of test (and val)."""

    @classmethod
    def put(cls, data: Dataset, device: torch.device, judge: Judge | None = None) -> "DeviceData":
        as_t = lambda a: None if a is None else torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        out = cls(as_t(data.x_train), as_t(data.x_test), data.y_train, data.y_test,
                  as_t(data.x_val), data.y_val, data.image_shape, judge)
        if judge is not None:
            out.real = {split: judge.features(x[:quality.QUALITY_SAMPLES])
                        for split, x in (("test", out.x_test), ("val", out.x_val)) if x is not None}
        return out


@dataclass
class Outcome:
    """What happened to one member: status, when and why it stopped, its curves and metrics."""

    key: str
    status: str = "running"  # ok | failed | pruned
    epochs_run: int = 0
    fail_epoch: int | None = None
    reason: str = ""
    train_seconds: float = 0.0
    """The member's share of its cohort's time by parameter count (the same for every
    activation: a configuration's cost, not an activation's)."""
    cohort: str = ""
    """The cohort the member trained in (`cohort_id`): shared by the members trained together."""
    cohort_members: int = 0
    """How many members that cohort started with."""
    cohort_seconds: float = float("nan")
    """That cohort's wall time of training and final evaluation in this run (a cohort resumed
    from a checkpoint: only the resumed part; NaN: it never trained)."""
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)
    """recon / prior / manifold: uint8 (n, D); a learnable activation's shape and shape0:
    float32 (layers, points)."""
    weights: dict = field(default_factory=dict)
    """A member that trained to the end: its own (unpadded) parameters, on the CPU."""


EpochHook = Callable[[int, dict[str, dict], bool], set]
"""Called after each epoch with {key: record} of running members and whether the epoch is
replayed from a checkpoint (reported, not judged again); returns keys to prune."""


def _record(epoch: int, values: list[float], family: Family) -> dict:
    """One epoch of one member: the training loss and its two parts (the family's), and the
    validation −ELBO and its parts when the study has a validation split and the family a
    reconstruction (the test split is evaluated once, at the end)."""
    names = [f"train_{part}" for part in family.parts]
    record = {"epoch": epoch, **dict(zip(("train_loss", *names), values[:3]))}
    if len(values) > 3:
        kl = values[5] if family.posterior else float("nan")
        record.update(val_nelbo=values[3], val_recon=values[4], val_kl=kl)
    return record


def _budget(device: torch.device) -> int:
    """Bytes an evaluation chunk may use."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(free // 4, 64 << 20)
    return 1 << 30


def _chunk(n: int, members: int, per_item_floats: int, budget: int) -> int:
    return max(1, min(n, budget // max(1, members * per_item_floats * 4)))


def _hidden_floats(fleet: Fleet) -> int:
    """Hidden values per example of the cohort's widest member (evaluation chunk sizes)."""
    return max(activation_floats(m.config, fleet.shape) for m in fleet.members)


def _member_noise(fleet: Fleet, gens: list[torch.Generator], *lead: int) -> Tensor:
    """Standard normal noise (N, *lead, L) from each member's own generator; zero on padding."""
    eps = torch.zeros(len(fleet), *lead, fleet.latent, device=fleet.device)
    for i, (m, g) in enumerate(zip(fleet.members, gens)):
        eps[i, ..., :m.config.latent_dim] = torch.randn(
            *lead, m.config.latent_dim, generator=g, device=fleet.device)
    return eps


def _eval_gens(fleet: Fleet) -> list[torch.Generator]:
    """Fresh evaluation generators: the same noise at every evaluation of a member."""
    return generators(fleet.members, Stream.EVAL, fleet.device)


@torch.no_grad()
def evaluate_elbo(fleet: Fleet, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Single-sample negative ELBO, recon and KL per image on `x`, each (N,)."""
    n, N = len(x), len(fleet)
    per_item = 3 * fleet.data_dim + 2 * _hidden_floats(fleet) + 6 * fleet.latent
    c = _chunk(n, N, per_item, _budget(fleet.device))
    gens = _eval_gens(fleet)
    recon = torch.zeros(N, device=fleet.device)
    kl = torch.zeros(N, device=fleet.device)
    for s in range(0, n, c):
        xb = x[s:s + c]  # (c, D), shared by all members
        mu, logvar = fleet.encode(xb)
        if fleet.family.posterior:
            z = mu + _member_noise(fleet, gens, len(xb)) * torch.exp(0.5 * logvar)
            kl += M.kl_per_dim(mu, logvar).sum((1, 2))
        else:
            z = mu
        recon -= fleet.log_likelihood(xb, fleet.decode(z)).sum(1)
    recon, kl = recon / n, kl / n
    return recon + (kl if fleet.family.posterior else 0.0), recon, kl


def cohort_id(keys: list[str]) -> str:
    """A cohort's name: a hash of its members' keys (unique trial ids and seeds, so unique in
    a study across runs and workers)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:12]


def train_cohort(members: list[Member], data: DeviceData, iwae_samples: int = 100,
                 on_epoch: EpochHook | None = None,
                 checkpoint: CohortCheckpoint | None = None) -> dict[str, Outcome]:
    """Train every member for its epochs (from `checkpoint`'s epoch, when it holds one, saving
    into it at epoch ends when due); returns each member's Outcome by key, each naming the
    cohort, its size and its wall time (training and final evaluation; after a resume, this
    run's part only)."""
    t0 = time.perf_counter()
    outcomes = _train(members, data, iwae_samples, on_epoch, checkpoint)
    name, seconds = cohort_id([m.key for m in members]), time.perf_counter() - t0
    for o in outcomes.values():
        o.cohort, o.cohort_members, o.cohort_seconds = name, len(members), seconds
    return outcomes


def _train(members: list[Member], data: DeviceData, iwae_samples: int,
           on_epoch: EpochHook | None, checkpoint: CohortCheckpoint | None) -> dict[str, Outcome]:
    """train_cohort's epochs and final evaluation."""
    device = data.x_train.device
    fleet = Fleet(members, data.shape or data.x_train.shape[1], device)
    outcomes = {m.key: Outcome(m.key) for m in members}
    cfg = fleet.members[0].config
    n, bs = len(data.x_train), cfg.batch_size
    steps = math.ceil(n / bs)
    cost = {m.key: param_count(m.config, fleet.shape) for m in members}
    start = checkpoint.restore(fleet, outcomes) if checkpoint is not None else 0
    if start and on_epoch is not None:
        _replay(outcomes, start, on_epoch)
    step = start * steps
    for epoch in range(start + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        perms, eps = fleet.epoch_draws(n)
        sums = torch.zeros(len(fleet), 3, device=device)
        first_bad = torch.full((len(fleet),), -1, dtype=torch.long, device=device)
        bad_nan = torch.zeros(len(fleet), dtype=torch.bool, device=device)
        for b in range(steps):
            idx = perms[:, b * bs:(b + 1) * bs]  # (N, B)
            loss, recon, kl = fleet.train_step(data.x_train[idx], eps[:, b * bs:(b + 1) * bs],
                                               fleet.beta(step, steps))
            bad = ~torch.isfinite(loss) & (first_bad < 0)
            first_bad = torch.where(bad, step, first_bad)
            bad_nan |= bad & torch.isnan(loss)
            sums += torch.stack([loss, recon, kl], 1) * idx.shape[1]
            step += 1
        reconstructs = "reconstruction" in fleet.family.measures
        val = evaluate_elbo(fleet, data.x_val) if data.x_val is not None and reconstructs else None
        rows = torch.cat([sums / n, *([torch.stack(val, 1)] if val else [])], 1).cpu()
        first_bad, bad_nan = first_bad.cpu(), bad_nan.cpu()
        elapsed = time.perf_counter() - t0
        total_cost = sum(cost[k] for k in fleet.keys)
        keep, records = set(), {}
        for i, key in enumerate(fleet.keys):
            o = outcomes[key]
            o.epochs_run = epoch
            o.train_seconds += elapsed * cost[key] / total_cost
            record = _record(epoch, rows[i].tolist(), fleet.family)
            o.history.append(record)
            if first_bad[i] >= 0 or not math.isfinite(record["train_loss"]):
                kind = "NaN" if bad_nan[i] else "inf"
                o.status, o.fail_epoch = "failed", epoch
                o.reason = f"training loss became {kind} at epoch {epoch} (step {int(first_bad[i]) + 1})"
            elif not math.isfinite(record.get("val_nelbo", 0.0)):
                o.status, o.fail_epoch = "failed", epoch
                o.reason = f"validation ELBO became non-finite at epoch {epoch}"
            else:
                keep.add(key)
                records[key] = record
        if on_epoch is not None and records:
            for key in on_epoch(epoch, records, False) or ():
                if key in keep:
                    keep.discard(key)
                    outcomes[key].status = "pruned"
                    outcomes[key].reason = f"pruned after epoch {epoch}"
        if len(keep) < len(fleet):
            if not keep:
                return outcomes
            fleet.select(keep)
        if checkpoint is not None and checkpoint.due():
            checkpoint.save(fleet, outcomes, epoch)
    _finish(fleet, data, iwae_samples, outcomes, cost)
    return outcomes


def _finish(fleet: Fleet, data: DeviceData, iwae_samples: int, outcomes: dict[str, Outcome],
            cost: dict[str, int]) -> None:
    """The members that trained to the end: final metrics, sample quality, images, learned
    shapes and weights into their outcomes, each charged its share of the time by its size;
    a non-finite final ELBO or generator output still fails a member."""
    t0 = time.perf_counter()
    final = (evaluate_final(fleet, data, iwae_samples) if "reconstruction" in fleet.family.measures
             else {m.key: {} for m in fleet.members})  # a GAN is judged by its samples only
    if "samples" in fleet.family.measures and data.judge is not None:
        for key, values in sample_quality(fleet, data).items():
            final[key].update(values)
    elapsed = time.perf_counter() - t0
    total_cost = sum(cost[k] for k in fleet.keys)
    images = sample_images(fleet, data.x_test)
    for key, curves in learned_shapes(fleet).items():
        images[key].update(curves)
    weights = {m.key: member_weights(fleet, i) for i, m in enumerate(fleet.members)}
    for key, values in final.items():
        o = outcomes[key]
        o.metrics, o.status, o.images, o.weights = values, "ok", images[key], weights[key]
        o.train_seconds += elapsed * cost[key] / total_cost
        if not math.isfinite(values.get("test_nelbo", 0.0)):
            o.status, o.fail_epoch = "failed", o.epochs_run
            o.reason = "final test ELBO is not finite"
        elif "reconstruction" not in fleet.family.measures and "prior" not in images[key]:
            o.status, o.fail_epoch = "failed", o.epochs_run
            o.reason = "the generator's output is not finite"


def _replay(outcomes: dict[str, Outcome], epochs: int, on_epoch: EpochHook) -> None:
    """Report the epochs a checkpoint holds again, as they were reported when trained: each
    epoch's records of the members still running after it (a member that failed in an epoch
    was not reported in it)."""
    for epoch in range(1, epochs + 1):
        records = {key: o.history[epoch - 1] for key, o in outcomes.items()
                   if len(o.history) >= epoch and (o.fail_epoch is None or epoch < o.fail_epoch)}
        if records:
            on_epoch(epoch, records, True)


@torch.no_grad()
def evaluate_final(fleet: Fleet, data: DeviceData, iwae_samples: int) -> dict[str, dict]:
    """Every test metric of the metric table for each member on the test split, and on the
    validation split as its val_ twins: {key: {metric: value}}. The linear probe is fitted
    once per member and scored on both splits."""
    results, mu_test = _evaluate_split(fleet, data.x_test, iwae_samples)
    scored = [("probe_accuracy", mu_test, data.y_test)]
    if data.x_val is not None:
        val, mu_val = _evaluate_split(fleet, data.x_val, iwae_samples)
        for key, row in val.items():
            results[key].update({val_name(k): v for k, v in row.items() if k != "kl_per_dim"})
        scored.append(("val_probe_accuracy", mu_val, data.y_val))
    probes = _probe(fleet, data, [(mu, y) for _, mu, y in scored])
    for m, accuracies in zip(fleet.members, probes):
        results[m.key].update({name: a for (name, _, _), a in zip(scored, accuracies)})
    return results


def _evaluate_split(fleet: Fleet, x: Tensor, iwae_samples: int) -> tuple[dict[str, dict], Tensor]:
    """The metrics of one split but the probe, and its posterior means μ (N, n, L)."""
    N, L, dev, vae = len(fleet), fleet.latent, fleet.device, fleet.family.posterior
    n = len(x)
    budget = _budget(dev)
    real_latent = fleet.latent_mask[:, 0, :]  # (N, L)

    # Pass 1: posterior moments and hidden-unit ranges (encoder on x, decoder on z = μ).
    per_item = 2 * fleet.data_dim + 2 * _hidden_floats(fleet) + 4 * L
    c = _chunk(n, N, per_item, budget)
    mus, logvars, lo, hi = [], [], None, None
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
    out["test_nelbo"], out["test_recon"], out["test_kl"] = evaluate_elbo(fleet, x)
    out["active_units"] = M.active_units(mu, real_latent).float()
    out["dead_units"] = M.dead_fraction(lo, hi, real_units)
    nan = torch.full((N,), float("nan"), device=dev)
    if vae:
        out["kl_per_dim"] = M.kl_per_dim(mu, logvar).mean(1)  # (N, L)
        out["test_nll"] = -_iwae(fleet, x, mu, logvar, iwae_samples, budget)
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
    per_item = k * (3 * fleet.data_dim + _hidden_floats(fleet) + 4 * fleet.latent)
    c = _chunk(n, N, per_item, budget)
    gens = _eval_gens(fleet)
    mask = fleet.latent_mask.unsqueeze(1)  # (N, 1, 1, L)
    total = torch.zeros(N, device=fleet.device)
    for s in range(0, n, c):
        m, lv, xb = mu[:, s:s + c], logvar[:, s:s + c], x[s:s + c]
        cb = m.shape[1]
        z = m.unsqueeze(1) + _member_noise(fleet, gens, k, cb) * torch.exp(0.5 * lv).unsqueeze(1)
        out = fleet.decode(z.reshape(N, k * cb, -1))  # (N, k·c, D)
        log_px = fleet.log_likelihood(xb.repeat(k, 1), out).view(N, k, cb)
        log_pz = (M.log_std_normal(z) * mask).sum(-1)  # (N, k, c)
        log_qz = (M.log_normal(z, m.unsqueeze(1), lv.unsqueeze(1)) * mask).sum(-1)
        total += M.iwae_bound(log_px + log_pz - log_qz, dim=1).sum(1)
    return total / n


def _mutual_info(fleet: Fleet, mu: Tensor, logvar: Tensor, budget: int) -> Tensor:
    """I(x; z) under the aggregate posterior of the first MI_MAX_POINTS test images: (N,)."""
    N = len(fleet)
    mu, logvar = mu[:, :MI_MAX_POINTS], logvar[:, :MI_MAX_POINTS]
    n = mu.shape[1]
    gens = _eval_gens(fleet)
    z = mu + _member_noise(fleet, gens, n) * torch.exp(0.5 * logvar)  # (N, n, L)
    mask = fleet.latent_mask  # (N, 1, L)
    self_term = (M.log_normal(z, mu, logvar) * mask).sum(-1)  # (N, n)
    c = _chunk(n, N, 2 * n * fleet.latent, budget)
    cross = []
    for s in range(0, n, c):
        zi = z[:, s:s + c].unsqueeze(2)  # (N, c, 1, L)
        lq = (M.log_normal(zi, mu.unsqueeze(1), logvar.unsqueeze(1)) * mask.unsqueeze(1)).sum(-1)
        cross.append(torch.logsumexp(lq, dim=2))  # (N, c)
    return M.mutual_information(self_term, torch.cat(cross, 1), n)


def _probe(fleet: Fleet, data: DeviceData, splits: list[tuple[Tensor, np.ndarray | None]]) -> list[list[float]]:
    """Per member: the linear-probe accuracy on μ of each split (μ (N, n, L), labels), from one
    probe fitted on training images (NaN without labels)."""
    N = len(fleet)
    if data.y_train is None or all(y is None for _, y in splits):
        return [[float("nan")] * len(splits) for _ in range(N)]
    x = data.x_train[:PROBE_MAX_TRAIN]
    c = _chunk(len(x), N, 2 * fleet.data_dim + _hidden_floats(fleet), _budget(fleet.device))
    mu_train = torch.cat([fleet.encode(x[s:s + c])[0] for s in range(0, len(x), c)], 1).cpu().numpy()
    y_train = data.y_train[:PROBE_MAX_TRAIN]
    evals = [(mu.cpu().numpy(), y) for mu, y in splits]
    return [M.probe_accuracies(mu_train[i, :, :m.config.latent_dim], y_train,
                               [(f[i, :, :m.config.latent_dim], y) for f, y in evals])
            for i, m in enumerate(fleet.members)]


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
            keys = [*act.params, *act.unit_params]
            for i in range(s, e):
                width = layer.width if layer.real is None else int(layer.real[i])
                x = grid.view(1, -1, 1).expand(1, len(grid), width)
                trained = {k: layer.slots[f"{act.name}.{k}"].tensor[i - s:i - s + 1, ..., :width]
                           if k in act.unit_params else layer.slots[f"{act.name}.{k}"].tensor[i - s:i - s + 1]
                           for k in keys}
                first = {k: v.to(fleet.device) for k, v in act.initial(1, width).items()}
                curves = out.setdefault(fleet.members[i].key, {})
                curves.setdefault(f"{side}shape", []).append(act.apply(x, trained)[0].mean(-1))
                curves.setdefault(f"{side}shape0", []).append(act.apply(x, first)[0].mean(-1))
                for k, v in trained.items():  # the learned values themselves, e.g. act0_alpha
                    curves[f"act{index}_{k}"] = [v[0]]
    return {key: {k: (torch.stack(v) if k.endswith(("shape", "shape0")) else v[0]).float().cpu().numpy()
                  for k, v in c.items()} for key, c in out.items()}


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
        c = _chunk(n, N, 2 * fleet.data_dim + _hidden_floats(fleet) + fleet.latent, _budget(fleet.device))
        feats, preds = [[] for _ in range(N)], [[] for _ in range(N)]
        for s in range(0, n, c):
            images = _means(fleet, fleet.decode(_member_noise(fleet, gens, min(c, n - s))))
            for i in range(N):
                feats[i].append(judge.features(images[i]))
                preds[i].append(judge.predict(images[i]))
        prefix = "" if split == "test" else "val_"
        for i, m in enumerate(fleet.members):
            fake = np.concatenate(feats[i])
            if not np.isfinite(fake).all():  # a diverged decoder: nothing to measure
                continue
            precision, recall = quality.precision_recall(real, fake)
            out[m.key].update({f"{prefix}fid": quality.fid(real, fake), f"{prefix}kid": quality.kid(real, fake),
                               f"{prefix}precision": precision, f"{prefix}recall": recall,
                               f"{prefix}class_coverage": quality.coverage(np.concatenate(preds[i]), judge.classes)})
    return out


def _means(fleet: Fleet, out: Tensor) -> Tensor:
    return fleet.family.mean_image(out, fleet.likelihood)


RECON_IMAGES = 8  # the first this-many test images are reconstructed by every member
PRIOR_IMAGES = 8  # decoded draws from the prior per member
MANIFOLD_SIDE = 10  # latent_dim 2: a side × side grid over the prior's quantiles


@torch.no_grad()
def sample_images(fleet: Fleet, x_test: Tensor) -> dict[str, dict[str, np.ndarray]]:
    """Per member: decoded means of reconstructions of fixed test images, prior samples and,
    for a 2-d latent space, the decoded latent manifold; as uint8 (0–255) rows of D pixels."""
    N, L, dev = len(fleet), fleet.latent, fleet.device
    coded = "reconstruction" in fleet.family.measures  # a GAN has no encoder: nothing to reconstruct
    mu = fleet.encode(x_test[:RECON_IMAGES])[0] if coded else torch.zeros(N, RECON_IMAGES, L, device=dev)
    recon = fleet.decode(mu)  # the posterior mean, as is usual for reconstructions
    gens = generators(fleet.members, Stream.IMAGES, dev)
    prior = fleet.decode(_member_noise(fleet, gens, PRIOR_IMAGES))
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
    result = {}
    for i, m in enumerate(fleet.members):
        result[m.key] = {"recon": recon[i]} if coded else {}
        if fleet.family.prior and finite[i]:  # an AE has no prior to sample
            result[m.key]["prior"] = prior[i]
            if m.config.latent_dim == 2:
                result[m.key]["manifold"] = manifold[i]
    return result
