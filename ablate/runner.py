"""Optuna study ⇄ cohorts: plan, ask trials, train them as one fleet, prune, tell results.

Owns: the one run loop for every strategy, resume after an interruption, the progress bar.
Does not own: training (train.py), where the store lives and its lock (store.py), or what is
derived from the store afterwards (tables.py, report.py).

A trial is one configuration; its seeds are its members. A grid is planned as WAITING trials
in Optuna's queue, popped one by one; a search asks its sampler (TPE with constant liar, so a
cohort asked at once is not K copies of one guess). Claims happen under the study's lock, so
two workers never take one grid point and a search never exceeds n_trials. A trial left
RUNNING by a worker that died is failed and its configuration queued again: nothing is lost
and nothing is counted twice.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from tqdm import tqdm

from ablate.data import Dataset, load_dataset
from ablate.errors import UserError
from ablate.files import atomic_open
from ablate.fleet import Member, cohort_key, member_param_count
from ablate.store import (WORKER, Backend, Heartbeat, check_results_dir, counted, decode_params, distributions,
                          encode_value, fail_interrupted, is_running, open_store, point_id,
                          queued_params, stale, was_queued)
from ablate.metrics import METRICS
from ablate.study import Study
from ablate.train import RECON_IMAGES, DeviceData, Outcome, train_cohort

MODEL_ROUNDS = 6
"""A model-based sampler (tpe, cmaes) asks n_trials / MODEL_ROUNDS trials per cohort by
default, so it learns from about six rounds of results instead of guessing all at once."""


def resolve_device(name: str) -> torch.device:
    """`auto` → the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: '{name}' was asked for but no CUDA device is available; "
                        "use device: auto or cpu.")
    device = torch.device(name)
    if device.type == "cuda":  # full fp32 so numbers compare across machines
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def max_epochs(study: Study) -> int:
    if "epochs" in study.ranges:
        return int(study.ranges["epochs"].high)
    return max(study.space.get("epochs", (study.base.epochs,)))


def make_sampler(study: Study, worker_index: int) -> optuna.samplers.BaseSampler:
    """The strategy's sampler. Workers seed it sampler_seed + their index in the study, so the
    first worker is reproducible and concurrent workers do not propose the same points (QMC
    shares one seed: its sequence is indexed through the storage)."""
    s = study.search
    seed = s.sampler_seed + worker_index
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if s.strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
    if s.strategy == "cmaes":  # CMA-ES models the numeric ranges; categorical keys are drawn at random
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False,
                                            independent_sampler=optuna.samplers.RandomSampler(seed))
    if s.strategy == "qmc":
        return optuna.samplers.QMCSampler(seed=s.sampler_seed, warn_independent_sampling=False,
                                          independent_sampler=optuna.samplers.RandomSampler(seed))
    return optuna.samplers.RandomSampler(seed)  # random; grid trials come from the queue


def make_pruner(study: Study) -> optuna.pruners.BasePruner:
    """The YAML's pruner over per-epoch values; the first quarter of epochs is never judged."""
    epochs = max_epochs(study)
    warm = epochs // 4
    name = study.search.pruner
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warm)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warm), max_resource=epochs,
                                              reduction_factor=3)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=max(2, warm))
    return optuna.pruners.NopPruner()


@dataclass
class Plan:
    """The store's state after planning: what is finished, queued, and spent of n_trials."""

    finished: int
    waiting: int
    counted: int

    def budget(self, study: Study) -> int:
        """New trials a search may still ask for (queued ones are already counted)."""
        return 0 if study.search.is_grid else max(0, study.search.n_trials - self.counted)


def plan(store: optuna.Study, study: Study) -> Plan:
    """Under the study's lock: fail the trials of dead workers and queue their configurations
    again; for a grid, queue every point not done, queued or running."""
    trials = store.get_trials(deepcopy=False)
    dead = [t for t in trials if t.state == TrialState.RUNNING and counted(t)
            and stale(t.user_attrs, t.datetime_start.timestamp() if t.datetime_start else None)]
    for t in dead:
        fail_interrupted(store, t)
    if dead:
        trials = store.get_trials(deepcopy=False)
    rerun = {t.user_attrs["rerun_of"] for t in trials if "rerun_of" in t.user_attrs}
    done, claimed, finished, waiting, n_counted = set(), set(), 0, 0, 0

    def enqueue(params: dict, **user_attrs) -> None:
        nonlocal waiting, n_counted
        store.enqueue_trial(params, user_attrs=user_attrs or None)
        waiting += 1
        n_counted += 1

    for t in trials:
        if t.user_attrs.get("spurious"):
            continue
        if not counted(t):  # a dead worker's; a grid queues its point below, as one not done
            if not study.search.is_grid and t.number not in rerun:  # the same configuration, again
                enqueue(queued_params(t), rerun_of=t.number)
            continue
        n_counted += 1
        pid = point_id(decode_params(study, queued_params(t)))
        if t.state.is_finished() and "members" in t.user_attrs:
            done.add(pid)
            finished += 1
        elif t.state in (TrialState.WAITING, TrialState.RUNNING):
            claimed.add(pid)
            waiting += t.state == TrialState.WAITING
    if study.search.is_grid:
        for point in sorted(study.points(), key=lambda p: cohort_key(study.config(p))):
            pid = point_id(point)
            if pid not in done and pid not in claimed:
                enqueue({k: encode_value(v) for k, v in point.items()})
                claimed.add(pid)
    return Plan(finished, waiting, n_counted)


def cohort_capacity(study: Study, data: Dataset, device: torch.device) -> int:
    """Members per cohort: what fits in half the free device memory, capped by cohort_size."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = _available_ram()
    worst = max((study.config(p) for p in study.corners()),
                key=lambda c: member_param_count(c, data.dim))
    n = len(data.x_train)
    params = member_param_count(worst, data.dim)
    widest = sum(worst.hidden) * 2 + data.dim * 3 + worst.latent_dim * 6
    per_member = 4 * (4 * params + 4 * worst.batch_size * widest + n * (worst.latent_dim + 2))
    cap = max(1, int(free * 0.5) // per_member)
    return min(cap, study.cohort_size) if study.cohort_size else cap


def trials_per_cohort(study: Study, data: Dataset, device: torch.device) -> int:
    """Trials asked at once: what fits, capped by search.cohort_trials, or for a model-based
    sampler by n_trials / MODEL_ROUNDS so it learns between cohorts."""
    fits = max(1, cohort_capacity(study, data, device) // len(study.seeds))
    s = study.search
    if s.cohort_trials:
        return min(fits, s.cohort_trials)
    if s.strategy in ("tpe", "cmaes"):
        return min(fits, max(1, math.ceil(s.n_trials / MODEL_ROUNDS)))
    return fits


def _available_ram() -> int:
    """Host memory this process may still use: MemAvailable, or less under a cgroup limit
    (a container's memory.max, which /proc/meminfo does not show)."""
    free = 4 << 30
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return free


def _claim(store: optuna.Study, study: Study, backend: Backend, heart: Heartbeat,
           want: int) -> list[optuna.Trial]:
    """Under the lock: plan, then take up to `want` trials: queued ones first, then (search)
    new ones from the sampler while n_trials allows."""
    dists = distributions(study)
    trials = []
    with backend.lock():
        state = plan(store, study)
        waiting, budget = state.waiting, state.budget(study)
        while len(trials) < want and (waiting > 0 or budget > 0):
            trial = store.ask(dists)
            if was_queued(store, trial):
                waiting -= 1
            elif study.search.is_grid:  # the queue was emptied by a process not under our lock
                trial.set_user_attr("spurious", True)
                store.tell(trial, state=TrialState.FAIL)
                break
            else:
                budget -= 1
            trial.set_user_attr("worker", WORKER)
            heart.hold(trial)
            trials.append(trial)
    return trials


def _tell(store: optuna.Study, study: Study, trial: optuna.Trial,
          outcomes: list[tuple[int, Outcome]]) -> None:
    """The trial's value is the mean objective over its seeds that trained to the end; all
    pruned → PRUNED (Optuna keeps the last reported value); none usable → FAIL."""
    objective = study.search.objective
    members, epochs = [], {}
    for seed, o in outcomes:
        members.append({"seed": seed, "status": o.status, "reason": o.reason,
                        "fail_epoch": o.fail_epoch, "epochs_run": o.epochs_run,
                        "train_seconds": o.train_seconds, **o.metrics})
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
    """Train every unfinished trial of `study` (each grid point, or n_trials of a search);
    returns the results folder."""
    try:  # user errors surface before anything is written
        data = load_dataset(study.dataset)
    except UserError as exc:
        raise UserError(f"{study.path}: {exc}") from None
    device = resolve_device(study.device)
    out_dir = Path(results_root) / study.name
    backend = Backend(study, out_dir)
    check_results_dir(study, out_dir, backend)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "study.yaml").write_text(study.source)
    store = open_store(study, out_dir, create=True, backend=backend)
    store.set_user_attr("data", {"n_train": len(data.x_train), "n_test": len(data.x_test),
                                 "dim": data.dim, "image_shape": data.image_shape})
    store.set_user_attr("device", str(device) if device.type == "cpu"
                        else f"{device} ({torch.cuda.get_device_name(device)})")
    with backend.lock():
        finished = plan(store, study).finished
        workers = store.user_attrs.get("workers", [])
        store.set_user_attr("workers", workers + [WORKER])
    store.sampler = make_sampler(study, len(workers))
    store.pruner = make_pruner(study)
    total = len(study.points()) if study.search.is_grid else study.search.n_trials
    dev_data = DeviceData.put(data, device)
    store.set_user_attr("environment", environment(device))
    store.set_user_attr("activation_cost", activation_cost(sorted(set(study.activations())), device))
    samples = out_dir / "samples"
    samples.mkdir(exist_ok=True)
    _save_npz(samples / "originals.npz",
              {"recon": (np.asarray(data.x_test[:RECON_IMAGES]) * 255).round().astype(np.uint8)})
    started = time.perf_counter()
    per_cohort = trials_per_cohort(study, data, device)
    bar = tqdm(total=total, initial=min(finished, total), disable=not progress, unit="trial",
               desc=f"{study.name} on {device}", dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} trials "
                          "[{elapsed}<{remaining}]")
    heart = Heartbeat(store)
    held: list[optuna.Trial] = []
    trials: list[optuna.Trial] = []
    try:
        while True:
            if len(held) < per_cohort:
                held += _claim(store, study, backend, heart, per_cohort - len(held))
            if not held:
                break
            keys = [cohort_key(study.config(decode_params(study, t.params))) for t in held]
            trials = [t for t, k in zip(held, keys) if k == keys[0]]
            held = [t for t, k in zip(held, keys) if k != keys[0]]  # another cohort key: the next cohort
            per_cohort = min(per_cohort, _train_trials(store, study, trials, dev_data, bar, samples))
            heart.release(trials)
            trials = []
    except BaseException:
        for trial in trials + held:
            if is_running(store, trial):
                trial.set_user_attr("interrupted", True)
                store.tell(trial, state=TrialState.FAIL)
        raise
    finally:
        heart.stop()
        bar.close()
        wall = store.user_attrs.get("wall_seconds", 0.0) + time.perf_counter() - started
        store.set_user_attr("wall_seconds", wall)  # summed over runs (resumes) and workers
    return out_dir


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (a reader never sees half a file); nothing to write, no file."""
    if not arrays:
        return
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def environment(device: torch.device) -> dict:
    """What produced the numbers: versions, the code's git commit, the machine."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "ablate"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = (commit + (" (with uncommitted changes)" if dirty else "")) if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"python": platform.python_version(), "ablate": ver("ablate"), "torch": torch.__version__,
            "numpy": np.__version__, "optuna": optuna.__version__, "pandas": ver("pandas"),
            "scipy": ver("scipy"), "scikit-learn": ver("scikit-learn"), "git_commit": commit,
            "cpu": f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
            "platform": platform.platform()}


def activation_cost(names: list[str], device: torch.device, elements: int = 1 << 20,
                    reps: int = 5) -> dict[str, float]:
    """Measured nanoseconds per element of each activation's forward + backward on `device`.

    Fleet members share every step, so wall time cannot be split by activation; this is the
    part of the cost that differs between activations (the matmuls are the same for all)."""
    from ablate.nonlinear import get_activation

    x = torch.randn(4, elements // 4, device=device, generator=torch.Generator(device=device).manual_seed(0))
    acts = {name: get_activation(name) for name in names}
    params = {name: {k: v.detach().to(device).expand(4, *v.shape).clone().requires_grad_(True)
                     for k, v in act.params.items()} for name, act in acts.items()}
    best = dict.fromkeys(names, float("inf"))
    for _ in range(reps + 1):  # round-robin, so a noisy spell of the machine hits every activation
        for name, act in acts.items():
            xs = x.unsqueeze(1).clone().requires_grad_(True)  # (G=4, B=1, H)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            act.apply(xs, params[name]).sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: t / elements * 1e9 for name, t in best.items()}


def out_of_memory(exc: BaseException) -> bool:
    """An allocation failure of the device (CUDA) or of the host (PyTorch's CPU allocator)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text
                                              or "out of memory" in text.lower())


def _release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _train_trials(store, study, trials, dev_data, bar, samples: Path) -> int:
    """Train `trials` (each with all its seeds) as one cohort and tell their results.

    When the cohort does not fit in memory after all (the estimate is only an estimate), it
    is split in two and each half trained on its own; members' results do not depend on their
    cohort, so nothing changes but the wall time. Returns the trials per cohort that fitted."""
    members, owner, start = [], {}, bar.n
    for trial in trials:
        config = study.config(decode_params(study, trial.params))
        for seed in study.seeds:
            key = f"t{trial.number}-s{seed}"
            members.append(Member(key, config, seed))
            owner[key] = (trial, seed)
    epochs = members[0].config.epochs
    proxy = METRICS[study.search.objective].per_epoch
    prune = study.search.pruner != "none"
    reported: set[tuple[int, int]] = set()
    pruned: set[int] = set()

    def on_epoch(epoch: int, records: dict[str, dict]) -> set:
        """Report each trial's mean per-epoch objective over its running seeds; then, with
        every trial of the cohort reported (a pruner compares them), prune trials whose
        curve the pruner gives up on: their members leave the computation."""
        by_trial: dict[int, list[float]] = {}
        for key, rec in records.items():
            by_trial.setdefault(owner[key][0].number, []).append(rec[proxy or "test_nelbo"])
        now = [t for t in trials if t.number in by_trial and (t.number, epoch) not in reported]
        for trial in now:  # (a cohort split for memory sees an epoch twice: report it once)
            reported.add((trial.number, epoch))
            if proxy:
                vals = by_trial[trial.number]
                trial.report(sum(vals) / len(vals), epoch)
        bar.update(len(records) / (epochs * len(study.seeds)))
        if prune:
            pruned.update(t.number for t in now if t.number not in pruned and t.should_prune())
        return {key for key in records if owner[key][0].number in pruned}

    outcomes, fitted = _train_fitting(members, dev_data, study, on_epoch, bar)
    for trial in trials:
        mine = sorted([(owner[k][1], o) for k, o in outcomes.items() if owner[k][0] is trial],
                      key=lambda p: p[0])
        _save_npz(samples / f"t{trial.number}.npz",  # before tell: a told trial has its images
                  {f"s{seed}_{kind}": img for seed, o in mine for kind, img in o.images.items()})
        _tell(store, study, trial, mine)
    bar.n = start + len(trials)  # members that stopped early leave fractional progress behind
    bar.refresh()
    return max(1, fitted // len(study.seeds))


def _train_fitting(members: list[Member], dev_data: DeviceData, study: Study, on_epoch,
                   bar) -> tuple[dict[str, Outcome], int]:
    """train_cohort, halving the cohort on out-of-memory; returns outcomes and the size that fit.

    A single member that cannot fit fails with the allocator's message as its reason."""
    start = bar.n
    try:
        return train_cohort(members, dev_data, study.iwae_samples, on_epoch), len(members)
    except RuntimeError as exc:
        if not out_of_memory(exc):
            raise
        message = str(exc).splitlines()[0][:300]
    # Outside the except block, so the traceback's frames (and their tensors) are gone.
    _release_memory(dev_data.x_train.device)
    bar.n = start
    if len(members) == 1:
        (m,) = members
        return {m.key: Outcome(m.key, status="failed", fail_epoch=0,
                               reason=f"out of memory even alone: {message}")}, 1
    half = len(members) // 2
    tqdm.write(f"{study.name}: a cohort of {len(members)} members did not fit in memory "
               f"({message}); training it as cohorts of {half} and {len(members) - half}.", file=sys.stderr)
    first, fit_a = _train_fitting(members[:half], dev_data, study, on_epoch, bar)
    second, fit_b = _train_fitting(members[half:], dev_data, study, on_epoch, bar)
    return {**first, **second}, min(fit_a, fit_b)
