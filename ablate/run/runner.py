"""The one run loop: claim trials from the study's sources, train them as one fleet, prune,
tell results.

Owns: the run loop for every strategy (grid, search, the tuned protocol), splitting a cohort
that runs out of memory, resume after an interruption, the progress bar, what a run records
beside the trials (data sizes and the trivial model's NLL, device, environment, activation
cost), each member's record as told (with its cohort). Does not own: where trials come from
and how they are planned (sources.py), the device and its memory (machine.py), training
(training/), the store and its lock (store.py), or what is derived from the store afterwards
(analysis/).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from tqdm import tqdm

from ablate import timing
from ablate.data.datasets import Dataset, load_dataset
from ablate.errors import UserError
from ablate.files import atomic_open
from ablate.nets import plugin
from ablate.nets.activations import spec_of
from ablate.nets.families import FAMILY
from ablate.nets.models import conv_sizes
from ablate.nets.nonlinear import probe
from ablate.run import tracking
from ablate.run.machine import (activation_cost, cohort_capacity, environment, out_of_memory, release_memory,
                                resolve_device)
from ablate.run.sources import Source, claim, make_pruner, make_sampler, plan, sources
from ablate.run.store import (WORKER, Backend, Heartbeat, create_store, decode_params, is_running, point_id,
                              stored_state, trial_id)
from ablate.study.metrics import METRICS
from ablate.study.schema import Study
from ablate.training.checkpoints import Checkpoints, CohortCheckpoint, identity
from ablate.training.classifier import judge_for
from ablate.training.estimators import trivial_nll
from ablate.training.fleet import Member
from ablate.training.kept import MODELS, save_trial
from ablate.training.loop import Outcome, cohort_id, train_cohort
from ablate.training.samples import RECON_IMAGES
from ablate.training.splits import DeviceData


def plugins(study: Study) -> set[str]:
    """The users' `package.module:Factory` activations a study names (encoder or decoder)."""
    configs = {study.config(p) for p in study.points()}
    return {n for c in configs for n in (c.activation, c.decoder) if spec_of(n) is None}


def _samples(study: Study, label: str) -> bool:
    """Whether the study trains a family that generates samples on dataset `label` (then
    sample quality is measured there)."""
    return any("samples" in FAMILY[c.family].measures and c.dataset == label
               for c in map(study.config, study.points()))


def _on_device(study: Study, label: str, data: Dataset, out_dir: Path, device: torch.device) -> DeviceData:
    """A dataset's splits on the device, with its classifier when a family generates samples
    from it (trained once, kept as classifier.pt, or classifier-<label>.pt beside others)."""
    judge = None
    if _samples(study, label):
        name = "classifier.pt" if len(study.datasets) == 1 else f"classifier-{label}.pt"
        judge = judge_for(data, out_dir / name, device)
    return DeviceData.put(data, device, judge, study.dci_estimators)


def check_architecture(study: Study, label: str, data: Dataset) -> None:
    """A conv model needs images, large enough to halve once per channels entry; a user's
    module builds, runs and vmaps on this data (plugin.check; searched sizes at their high
    end)."""
    own = [c for c in map(study.config, study.corners()) if c.module and c.dataset == label]
    try:
        plugin.check(own, tuple(data.image_shape or (data.dim,)))
    except UserError as exc:
        entry = f" (dataset '{label}')" if len(study.datasets) > 1 else ""
        raise UserError(f"{study.path}: {exc}{entry}") from None
    for config in {study.config(p) for p in study.points()}:
        if config.arch != "conv" or config.dataset != label:
            continue
        if data.image_shape is None:
            raise UserError(f"{study.path}: model.arch: conv needs images, but dataset "
                            f"'{label}' has flat rows of {data.dim} values and no image shape; "
                            "give the npz a shape: [C, H, W] or use arch: mlp.")
        try:
            conv_sizes(data.image_shape, config.channels)
        except ValueError as exc:
            raise UserError(f"{study.path}: model.channels: {exc} (dataset '{label}'); use fewer "
                            "channels entries or larger images.") from None


def load_datasets(study: Study) -> dict[str, Dataset]:
    """Every dataset of the study, by label, checked for what its members need (values in
    [0, 1] for a Bernoulli likelihood or a GAN, images for a conv model) before anything is
    written."""
    out = {}
    for label, options in study.datasets.items():
        configs = {c for c in map(study.config, study.points()) if c.dataset == label}
        unit = any(FAMILY[c.family].unit_data(c.likelihood) for c in configs)
        try:
            out[label] = load_dataset(options, unit)
        except UserError as exc:
            entry = f"space.dataset entry '{label}': " if "dataset" in study.space else ""
            raise UserError(f"{study.path}: {entry}{exc}") from None
        check_architecture(study, label, out[label])
    return out


def _tell(store: optuna.Study, study: Study, trial: optuna.Trial,
          outcomes: list[tuple[int, Outcome]]) -> None:
    """Store each member's record (status, metrics, its cohort: id, size, wall seconds) and
    its curves; the trial's value is the mean objective over its seeds that trained to the
    end; all pruned → PRUNED (Optuna keeps the last reported value); none usable → FAIL."""
    objective = study.search.objective
    members, epochs = [], {}
    for seed, o in outcomes:
        members.append({"seed": seed, "status": o.status, "reason": o.reason,
                        "fail_epoch": o.fail_epoch, "epochs_run": o.epochs_run, "params": o.params, "flops": o.flops,
                        "train_seconds": o.train_seconds, "cohort": o.cohort,
                        "cohort_members": o.cohort_members, "cohort_seconds": o.cohort_seconds,
                        **o.metrics})
        epochs[str(seed)] = o.history
    trial.set_user_attr("epochs", epochs)
    trial.set_user_attr("members", members)
    values = [m[objective] for m in members
              if m["status"] == "ok" and math.isfinite(m.get(objective, float("nan")))]
    if values:
        store.tell(trial, sum(values) / len(values))
    elif any(m["status"] == "pruned" for m in members):
        store.tell(trial, state=TrialState.PRUNED)
    else:
        store.tell(trial, state=TrialState.FAIL)


def run_study(study: Study, results_root: Path, progress: bool = True) -> Path:
    """Train every unfinished trial of `study` (each grid point, n_trials of a search, or the
    tuned protocol's searches and final arms); returns the results folder."""
    timing.taken()  # this run's account only (a process may run several studies)
    with timing.phase("setup"), timing.phase("setup/data and checks"):
        datas, device, capacity = _checked(study)
    out_dir = Path(results_root) / study.name
    backend = Backend(study, out_dir)
    store = create_store(study, out_dir, backend)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "study.yaml").write_text(study.source)
    with backend.lock():
        workers = store.user_attrs.get("workers", [])
        store.set_user_attr("workers", workers + [WORKER])
        srcs = sources(study, store, backend, len(workers))
        finished = sum(plan(s, study).finished for s in srcs)
    store.sampler, store.pruner = make_sampler(study, len(workers)), make_pruner(study)
    with timing.phase("setup"):
        with timing.phase("setup/records and activation cost"):
            _record_setup(store, study, datas, device, out_dir)
        with timing.phase("setup/data on the device and classifier"):
            dev_data = {label: _on_device(study, label, data, out_dir, device) for label, data in datas.items()}
    store.set_user_attr("classifier", {label: {"test_accuracy": d.judge.accuracy, "classes": d.judge.classes}
                                       for label, d in dev_data.items() if d.judge is not None})
    total = sum(s.size for s in srcs)
    # whole trials shown (epochs move the bar in between); the ETA from the average pace since
    # training began (smoothing 0), not from the last update; the phase in the description
    bar = tqdm(total=total, initial=min(finished, total), disable=not progress, unit="trial",
               desc=f"{study.name} on {device}: training", dynamic_ncols=True, smoothing=0,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} trials "
                          "[{elapsed}<{remaining}]")
    outputs = Outputs(out_dir / "samples", out_dir / MODELS,
                      Checkpoints(out_dir / "checkpoints", study.checkpoint_minutes),
                      tracking.Trackers(study, out_dir), _fault_point())
    started = time.perf_counter()
    try:
        _loop(study, srcs, backend, Heartbeat(store), capacity, dev_data,
              bar, outputs)
    finally:
        bar.close()
        wall = store.user_attrs.get("wall_seconds", 0.0) + time.perf_counter() - started
        store.set_user_attr("wall_seconds", wall)  # summed over runs (resumes) and workers
        store.set_user_attr("time", timing.added(store.user_attrs.get("time", {}), timing.current()))
    return out_dir


def _checked(study: Study) -> tuple[dict[str, Dataset], torch.device, int]:
    """Every dataset, plug-in, tracker and the device checked, and the members a cohort may
    hold (a member too large is refused): all before anything is written."""
    datas = load_datasets(study)
    for name in plugins(study):
        try:
            probe(name)
        except UserError as exc:
            raise UserError(f"{study.path}: {exc}") from None
    tracking.check(study)
    try:
        device = resolve_device(study.device)
    except UserError as exc:
        given = next((f"--set {o}: " for o in study.overrides if o.partition("=")[0].strip() == "device"), "")
        raise UserError(f"{study.path}: {given}{exc}") from None
    return datas, device, min(cohort_capacity(study, data, device) for data in datas.values())


FAULT = "ABLATE_FAULT_KILL"
"""Fault injection for the tests of resuming: `<cohort>:<epoch>` in the environment makes the
run kill itself with SIGKILL (no cleanup, as a crash or the kernel's OOM killer would) once
the cohort-th cohort it trains (counted from 1) has reported that epoch. A kill at a chosen
point replaces a test's guess of when to send one; unset, it does nothing."""


def _fault_point() -> tuple[int, int] | None:
    cohort, sep, epoch = os.environ.get(FAULT, "").partition(":")
    return (int(cohort), int(epoch)) if sep and cohort.isdigit() and epoch.isdigit() else None


@dataclass
class Outputs:
    """Where a run keeps what its cohorts leave besides the store: the images the report
    draws, the trained members, and the checkpoints of cohorts in training; and how many
    cohorts it has trained (with `fault`, the point at which a test kills it)."""

    samples: Path
    models: Path
    checkpoints: Checkpoints
    trackers: tracking.Trackers
    fault: tuple[int, int] | None = None
    cohorts: int = 0


def _loop(study: Study, srcs: list[Source], backend: Backend, heart: Heartbeat, capacity: int,
          dev_data: dict[str, DeviceData], bar, outputs: Outputs) -> None:
    """Claim trials worth up to `capacity` members, train those of one cohort key together,
    tell, and again, until no source has work; an interruption fails the held trials as
    interrupted (their configurations run again)."""
    held: list[tuple[Source, optuna.Trial]] = []
    cohort: list[tuple[Source, optuna.Trial]] = []
    try:
        while True:
            room = capacity - sum(len(s.seeds) for s, _ in held)
            if room > 0:
                with timing.phase("store"), timing.phase("store/claiming trials"):
                    held += claim(srcs, study, backend, heart, room)
            if not held:
                break
            keys = [s.config(study, t.params).cohort_key for s, t in held]
            cohort = [h for h, k in zip(held, keys) if k == keys[0]]
            held = [h for h, k in zip(held, keys) if k != keys[0]]  # another cohort key: the next cohort
            capacity = min(capacity, _train_trials(study, cohort, dev_data, bar, outputs))
            heart.release(t for _, t in cohort)
            cohort = []
    except BaseException:
        for source, trial in cohort + held:
            if is_running(source.store, trial):
                trial.set_user_attr("interrupted", True)
                source.store.tell(trial, state=TrialState.FAIL)
        raise
    finally:
        heart.stop()


def _record_setup(store: optuna.Study, study: Study, datas: dict[str, Dataset], device: torch.device,
                  out_dir: Path) -> None:
    """What the report says about the run besides the trials: each dataset's sizes and the
    test NLL of independent pixels under each likelihood the study uses (`trivial_nll`, nats
    per image), device, versions, each activation's measured cost; and each dataset's test
    images every member reconstructs (samples/originals-<label>.npz)."""
    likelihoods = sorted({study.config(p).likelihood for p in study.points()})
    store.set_user_attr("data", {label: _data_record(data, likelihoods) for label, data in datas.items()})
    store.set_user_attr("overrides", list(study.overrides))
    store.set_user_attr("device", str(device) if device.type == "cpu"
                        else f"{device} ({torch.cuda.get_device_name(device)})")
    store.set_user_attr("environment", environment(device))
    store.set_user_attr("activation_cost", activation_cost(sorted(set(study.activations())), device))
    samples = out_dir / "samples"
    samples.mkdir(exist_ok=True)
    for label, data in datas.items():
        recon = (np.asarray(data.x_test[:RECON_IMAGES]) * 255).round().astype(np.uint8)
        _save_npz(samples / f"originals-{label}.npz", {"recon": recon})


def _data_record(data: Dataset, likelihoods: list[str]) -> dict:
    """One dataset's sizes, shape, factors, whether its pixels are binary, and trivial NLL, as
    the store keeps them."""
    return {"name": data.name, "n_train": len(data.x_train), "n_test": len(data.x_test),
            "n_val": 0 if data.x_val is None else len(data.x_val), "dim": data.dim,
            "image_shape": data.image_shape, "factors": dict(zip(data.factor_names, data.factor_sizes)),
            "binary": bool(np.isin(data.x_train, (0.0, 1.0)).all()),
            "trivial_nll": {lik: trivial_nll(data.x_train, data.x_test, lik) for lik in likelihoods}}


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (a reader never sees half a file); nothing to write, no file."""
    if not arrays:
        return
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def _train_trials(study: Study, cohort: list[tuple[Source, optuna.Trial]],
                  datas: dict[str, DeviceData], bar, outputs: Outputs) -> int:
    """Train the trials of `cohort` (each with its source's seeds) as one fleet — members a
    killed run left a checkpoint of resume from it, as a fleet of their own — and tell their
    results.

    When the cohort does not fit in memory after all (the estimate is only an estimate), it
    is split in two and each half trained on its own; members' results do not depend on their
    cohort, so nothing changes but the wall time. Returns the members per cohort that fitted."""
    members, owner, idents, start = [], {}, {}, bar.n
    for source, trial in cohort:
        config = source.config(study, trial.params)
        point = point_id(decode_params(study, trial.params))
        for seed in source.seeds:
            key = f"{trial_id(trial)}-{seed}"  # ids are unique across the sources' studies
            members.append(Member(key, config, seed))
            owner[key] = (source, trial, seed)
            idents[key] = identity(source.store.study_name, point, seed)
    epochs, dev_data = members[0].config.epochs, datas[members[0].config.dataset]
    proxy = METRICS[study.search.objective].per_epoch
    outputs.cohorts += 1
    reported: set[tuple[int, int]] = set()
    pruned: set[int] = set()

    def on_epoch(epoch: int, records: dict[str, dict], replay: bool) -> set:
        """Report each pruned source's trials' mean per-epoch objective (validation) over their
        running seeds; then, with every trial of the cohort reported (a pruner compares them),
        prune trials whose curve the pruner gives up on: their members leave the computation.
        An epoch replayed from a checkpoint is reported only (it was judged when it was
        trained). Trials no pruner judges are not reported: a write per trial and epoch was a
        tenth of quick.yaml's time, and their curves are kept with their members (`epochs`)."""
        by_trial: dict[int, list[float]] = {}
        for key, rec in records.items():
            source, trial, _ = owner[key]
            if proxy and proxy in rec:  # (a GAN has no validation ELBO to report)
                by_trial.setdefault(trial_id(trial), []).append(rec[proxy])
            bar.n = min(bar.total, bar.n + 1 / (epochs * len(source.seeds)))  # sums of fractions overshoot
        bar.refresh()
        if epoch == epochs and not replay:  # the cohort's last epoch: its evaluation comes next
            _phase(bar, "evaluating")
        now = [(s, t) for s, t in cohort
               if s.prune and trial_id(t) in by_trial and (trial_id(t), epoch) not in reported]
        for _, trial in now:  # (a cohort split for memory sees an epoch twice: report it once)
            reported.add((trial_id(trial), epoch))
            vals = by_trial[trial_id(trial)]
            trial.report(sum(vals) / len(vals), epoch)
        if outputs.fault == (outputs.cohorts, epoch) and not replay:
            os.kill(os.getpid(), signal.SIGKILL)
        if replay:
            return set()
        pruned.update(trial_id(t) for s, t in now if trial_id(t) not in pruned and t.should_prune())
        return {key for key in records if trial_id(owner[key][1]) in pruned}

    outcomes, fitted = {}, len(members)
    for keys, checkpoint in outputs.checkpoints.partition(idents):
        group = [m for m in members if m.key in set(keys)]
        if checkpoint.epoch:
            trials = sorted({owner[k][1].number for k in keys})
            tqdm.write(f"{study.name}: resuming {len(group)} members (trials "
                       f"{', '.join(map(str, trials))}) from their checkpoint at epoch "
                       f"{checkpoint.epoch} of {epochs}", file=sys.stderr)
        got, fit = _train_fitting(group, dev_data, study, on_epoch, bar, checkpoint)
        outcomes.update(got)
        fitted = min(fitted, fit)
    _phase(bar, "training")
    with timing.phase("store"), timing.phase("store/results, images and models"):
        _store_results(study, cohort, outcomes, owner, dev_data, outputs)
    outputs.checkpoints.forget(list(idents.values()))
    bar.n = start + len(cohort)  # members that stopped early leave fractional progress behind
    bar.refresh()
    return max(1, fitted)


def _phase(bar, name: str) -> None:
    """Show the run's phase (training, evaluating) in its progress bar's description."""
    if not bar.disable:
        bar.set_description_str(bar.desc.rpartition(": ")[0] + f": {name}")


def _store_results(study: Study, cohort: list[tuple[Source, optuna.Trial]], outcomes: dict[str, Outcome],
                   owner: dict, dev_data: DeviceData, outputs: Outputs) -> None:
    """Each trial's images, kept members and record, told to its store and its trackers."""
    for source, trial in cohort:
        mine = sorted([(owner[k][2], o) for k, o in outcomes.items() if owner[k][1] is trial],
                      key=lambda p: p[0])
        if source.images:  # before tell: a told trial has its images and models (not a tuning trial)
            _save_npz(outputs.samples / f"t{trial.number}.npz",
                      {f"s{seed}_{kind}": img for seed, o in mine for kind, img in o.arrays.items()})
            save_trial(outputs.models, trial.number, dev_data.shape or (dev_data.x_train.shape[1],),
                       [(seed, owner[o.key][0].config(study, trial.params), o.weights)
                        for seed, o in mine if o.status == "ok"])
        _tell(source.store, study, trial, mine)
        if outputs.trackers.active:
            outputs.trackers.trial(_tracked(study, source, trial, mine))


def _tracked(study: Study, source: Source, trial: optuna.Trial, mine: list[tuple[int, Outcome]]) -> dict:
    """A told trial as the trackers log it: its configuration, state, members and curves."""
    state = stored_state(source.store, trial)
    params = {k: v for k, v in asdict(source.config(study, trial.params)).items()}
    params.update(seeds=",".join(str(seed) for seed, _ in mine), **decode_params(study, trial.params))
    return {"name": source.store.study_name, "number": trial.number,
            "state": {"COMPLETE": "complete", "PRUNED": "pruned"}.get(state.name, "failed"),
            "params": params, "epochs": {seed: o.history for seed, o in mine},
            "members": [{"seed": seed, "status": o.status, **o.metrics} for seed, o in mine]}


def _train_fitting(members: list[Member], dev_data: DeviceData, study: Study, on_epoch,
                   bar, checkpoint: CohortCheckpoint) -> tuple[dict[str, Outcome], int]:
    """train_cohort, halving the cohort on out-of-memory (each half with a checkpoint of its
    own, from the start); returns outcomes and the size that fit.

    A single member that cannot fit fails with the allocator's message as its reason."""
    start = bar.n
    try:
        return (train_cohort(members, dev_data, study.iwae_samples, on_epoch, checkpoint),
                len(members))
    except RuntimeError as exc:
        if not out_of_memory(exc):
            raise
        message = str(exc).splitlines()[0][:300]
    # Outside the except block, so the traceback's frames (and their tensors) are gone.
    release_memory(dev_data.x_train.device)
    bar.n = start
    if len(members) == 1:
        (m,) = members
        return {m.key: Outcome(m.key, status="failed", fail_epoch=0, cohort=cohort_id([m.key]),
                               cohort_members=1, reason=f"out of memory even alone: {message}")}, 1
    half = len(members) // 2
    tqdm.write(f"{study.name}: a cohort of {len(members)} members did not fit in memory "
               f"({message}); training it as cohorts of {half} and {len(members) - half}.", file=sys.stderr)
    halves = [members[:half], members[half:]]
    (first, fit_a), (second, fit_b) = (
        _train_fitting(h, dev_data, study, on_epoch, bar, checkpoint.part([m.key for m in h]))
        for h in halves)
    return {**first, **second}, min(fit_a, fit_b)
