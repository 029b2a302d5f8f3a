"""The epoch loop of one cohort.

Owns: minibatches gathered by index on the device, per-epoch records, divergence (a member
whose loss turns NaN/inf fails alone and leaves the computation), stopping members on request
(pruning), the end of training (final metrics, samples, weights into each member's `Outcome`),
each cohort's name (`cohort_id`) and wall time. Does not own: the model's insides (fleet.py,
families.py), evaluation passes (evaluation.py), images (samples.py), or the store (run/).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ablate.nets.families import Family
from ablate import timing
from ablate.nets.models import flops, param_count
from ablate.training.checkpoints import CohortCheckpoint
from ablate.training.evaluation import evaluate_elbo, evaluate_final
from ablate.training.fleet import Fleet, Member
from ablate.training.kept import member_weights
from ablate.training.samples import activation_state, learned_shapes, sample_images, sample_quality
from ablate.training.splits import DeviceData


@dataclass
class Outcome:
    """What happened to one member: status, when and why it stopped, its curves and metrics."""

    key: str
    status: str = "running"  # ok | failed | pruned
    epochs_run: int = 0
    fail_epoch: int | None = None
    reason: str = ""
    params: int = 0
    """The member's own trainable values (unpadded; a user's module's, counted on one copy)."""
    flops: int = 0
    """Its forward FLOPs per example (models.flops): with params, what a fair comparison weighs."""
    train_seconds: float = 0.0
    """The member's share of its cohort's time, by parameter count."""
    cohort: str = ""
    """The cohort the member trained in (`cohort_id`): shared by the members trained together."""
    cohort_members: int = 0
    """How many members that cohort started with."""
    cohort_seconds: float = float("nan")
    """That cohort's wall time of training and final evaluation in this run (a cohort resumed
    from a checkpoint: only the resumed part; NaN: it never trained)."""
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    """What the report draws, saved in samples/t<trial>.npz: images (recon / prior / manifold:
    uint8 (n, D)) and a learnable activation's shapes (shape, shape0: float32 (layers,
    points)) and learned values."""
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
    with timing.phase("training"), timing.phase("training/building the models"):
        fleet = Fleet(members, data.shape or data.x_train.shape[1], device)
    outcomes = {m.key: Outcome(m.key) for m in members}
    cfg = fleet.members[0].config
    n, bs = len(data.x_train), cfg.batch_size
    steps = math.ceil(n / bs)
    cost = {m.key: param_count(m.config, fleet.shape) for m in members}
    for m in members:
        outcomes[m.key].params, outcomes[m.key].flops = cost[m.key], flops(m.config, fleet.shape)
    if fleet.model.strategies():
        with timing.phase("training"), timing.phase("training/choosing conv strategies"):
            fleet.model.tune(bs)
    start = checkpoint.restore(fleet, outcomes) if checkpoint is not None else 0
    if start and on_epoch is not None:
        _replay(outcomes, start, on_epoch)
    step = start * steps
    for epoch in range(start + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        with timing.phase("training"):
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
            with timing.phase("training/validation each epoch"):
                reconstructs = "reconstruction" in fleet.family.measures
                val = evaluate_elbo(fleet, data.x_val) if data.x_val is not None and reconstructs else None
                rows = torch.cat([sums / n, *([torch.stack(val, 1)] if val else [])], 1).cpu()
            first_bad, bad_nan = first_bad.cpu(), bad_nan.cpu()
        elapsed = time.perf_counter() - t0
        flows = fleet.flow.take()  # each member's gradient norms of this epoch, per layer
        learned = activation_state(fleet)  # and what its learnable activations hold
        total_cost = sum(cost[k] for k in fleet.keys)
        keep, records = set(), {}
        for i, key in enumerate(fleet.keys):
            o = outcomes[key]
            o.epochs_run = epoch
            o.train_seconds += elapsed * cost[key] / total_cost
            record = {**_record(epoch, rows[i].tolist(), fleet.family), **flows[i], **learned[i]}
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
            with timing.phase("checkpoints"):
                checkpoint.save(fleet, outcomes, epoch)
    with timing.phase("evaluation"):
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
        with timing.phase("evaluation/sample quality"):
            for key, values in sample_quality(fleet, data).items():
                final[key].update(values)
    elapsed = time.perf_counter() - t0
    total_cost = sum(cost[k] for k in fleet.keys)
    with timing.phase("evaluation/images and weights"):
        images = sample_images(fleet, data.x_test, traverse=bool(data.factors))
        for key, curves in learned_shapes(fleet).items():
            images[key].update(curves)
        weights = {m.key: member_weights(fleet, i) for i, m in enumerate(fleet.members)}
    for key, values in final.items():
        o = outcomes[key]
        o.metrics, o.status, o.arrays, o.weights = values, "ok", images[key], weights[key]
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
