"""Optuna study ⇄ cohorts: plan the grid, ask trials, train them as one fleet, tell results.

Owns: the store (an Optuna RDB storage, SQLite file by default), the cohort loop, resume
after an interruption, the progress bar. Does not own: training (train.py) or what is derived
from the store afterwards (tables.py, report.py).

A trial is one configuration (a grid point); its seeds are its members. The grid is planned
as WAITING trials in Optuna's queue, which `ask()` pops atomically, so a point is claimed by
one process only. A trial left RUNNING by a process that died is failed on the next run and
its point is queued again: nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import fcntl
import gc
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import optuna
import torch
from tqdm import tqdm

from ablate.data import Dataset, load_dataset
from ablate.errors import UserError
from ablate.files import atomic_open
from ablate.fleet import Member, cohort_key, member_param_count
from ablate.study import Study
from ablate.train import RECON_IMAGES, DeviceData, Outcome, train_cohort

MAXIMIZE = {"probe_accuracy", "active_units", "mutual_info"}
WORKER = f"{socket.gethostname()}:{os.getpid()}"


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


def encode_value(value):
    """Optuna categorical choices must be scalars: tuples (hidden widths) travel as JSON text."""
    return json.dumps(list(value)) if isinstance(value, tuple) else value


def decode_params(study: Study, params: dict) -> dict:
    return {k: tuple(json.loads(v)) if isinstance(study.space[k][0], tuple) else v
            for k, v in params.items()}


def point_id(point: dict) -> str:
    return json.dumps({k: encode_value(v) for k, v in sorted(point.items())})


def storage_url(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'study.db').resolve()}"


SQLITE_TIMEOUT_S = 120  # a writer waits this long for another process's lock, not failing


def sqlite_storage(out_dir: Path) -> optuna.storages.RDBStorage:
    """The default store: an SQLite file that several local processes may share. Writers
    wait for each other (busy timeout) instead of failing with "database is locked"."""
    with plan_lock(out_dir):  # the first connection creates the schema: one process at a time
        return optuna.storages.RDBStorage(
            storage_url(out_dir), engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})


@contextmanager
def plan_lock(out_dir: Path):
    """An exclusive lock (flock) on the results folder, held while a process creates the
    study or plans the grid, so two processes never queue the same grid point twice."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".plan.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_store(study: Study, out_dir: Path, create: bool) -> optuna.Study:
    """The study's Optuna record; refuses one written by a study with other settings."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = sqlite_storage(out_dir)
    if not create:
        return optuna.load_study(study_name=study.name, storage=storage)
    direction = "maximize" if study.metric in MAXIMIZE else "minimize"
    store = optuna.create_study(study_name=study.name, storage=storage, load_if_exists=True,
                                direction=direction)
    known = store.user_attrs.get("fingerprint")
    if known is None:
        store.set_user_attr("fingerprint", study.fingerprint())
        store.set_user_attr("metric", study.metric)
        store.set_user_attr("seeds", list(study.seeds))
    return store


def check_results_dir(study: Study, out_dir: Path) -> None:
    """Refuse to mix two different studies in one results folder (before writing anything)."""
    db = out_dir / "study.db"
    if not db.exists():
        return
    try:
        store = open_store(study, out_dir, create=False)
    except KeyError:
        return
    known = store.user_attrs.get("fingerprint")
    if known is not None and known != study.fingerprint():
        raise UserError(f"{study.path}: {out_dir} holds results of a study named '{study.name}' "
                        "with other settings (dataset, model, train, seeds, space or eval). "
                        f"Give this study another name, use --results elsewhere, or remove {out_dir}.")


def _alive(worker: str | None) -> bool:
    if not worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's worker: not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def plan(store: optuna.Study, study: Study) -> int:
    """Fail trials whose process died; queue every grid point not done, queued or running.

    Returns how many grid points are already finished."""
    storage = store._storage
    done, claimed = set(), set()
    for t in store.get_trials(deepcopy=False):
        if t.user_attrs.get("spurious"):
            continue
        pid = point_id(decode_params(study, t.params) if t.params else
                       decode_params(study, t.system_attrs.get("fixed_params", {})))
        if t.state == optuna.trial.TrialState.RUNNING and not _alive(t.user_attrs.get("worker")):
            storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            continue
        if t.state.is_finished() and "members" in t.user_attrs:
            done.add(pid)
        elif t.state in (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING):
            claimed.add(pid)
    points = sorted(study.points(), key=lambda p: cohort_key(study.config(p)))
    for point in points:
        pid = point_id(point)
        if pid not in done and pid not in claimed:
            store.enqueue_trial({k: encode_value(v) for k, v in point.items()})
    return sum(point_id(p) in done for p in points)


def cohort_capacity(study: Study, data: Dataset, device: torch.device) -> int:
    """Members per cohort: what fits in half the free device memory, capped by cohort_size."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = _available_ram()
    worst = max((study.config(p) for p in study.points()),
                key=lambda c: member_param_count(c, data.dim))
    n = len(data.x_train)
    params = member_param_count(worst, data.dim)
    widest = sum(worst.hidden) * 2 + data.dim * 3 + worst.latent_dim * 6
    per_member = 4 * (4 * params + 4 * worst.batch_size * widest + n * (worst.latent_dim + 2))
    cap = max(1, int(free * 0.5) // per_member)
    return min(cap, study.cohort_size) if study.cohort_size else cap


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


def _ask(store: optuna.Study, study: Study) -> optuna.Trial | None:
    """Pop the next queued grid point, or None when the queue is empty."""
    waiting = store.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if not waiting:
        return None
    trial = store.ask()
    if "fixed_params" not in store._storage.get_trial_system_attrs(trial._trial_id):  # queue emptied by another worker
        trial.set_user_attr("spurious", True)
        store.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    trial.set_user_attr("worker", WORKER)
    for key, values in study.space.items():
        trial.suggest_categorical(key, [encode_value(v) for v in values])
    return trial


def _tell(store: optuna.Study, study: Study, trial: optuna.Trial,
          outcomes: list[tuple[int, Outcome]]) -> None:
    members, epochs = [], {}
    for seed, o in outcomes:
        members.append({"seed": seed, "status": o.status, "reason": o.reason,
                        "fail_epoch": o.fail_epoch, "epochs_run": o.epochs_run,
                        "train_seconds": o.train_seconds, **o.metrics})
        epochs[str(seed)] = o.history
    trial.set_user_attr("epochs", epochs)
    trial.set_user_attr("members", members)
    values = [m[study.metric] for m in members
              if m["status"] == "ok" and math.isfinite(m.get(study.metric, float("nan")))]
    if values:
        store.tell(trial, sum(values) / len(values))
    else:
        store.tell(trial, state=optuna.trial.TrialState.FAIL)


def run_study(study: Study, results_root: Path, progress: bool = True) -> Path:
    """Train every unfinished grid point of `study`; returns the results folder."""
    try:  # user errors surface before anything is written
        data = load_dataset(study.dataset)
    except UserError as exc:
        raise UserError(f"{study.path}: {exc}") from None
    device = resolve_device(study.device)
    out_dir = Path(results_root) / study.name
    check_results_dir(study, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "study.yaml").write_text(study.source)
    store = open_store(study, out_dir, create=True)
    store.set_user_attr("data", {"n_train": len(data.x_train), "n_test": len(data.x_test),
                                 "dim": data.dim, "image_shape": data.image_shape})
    store.set_user_attr("device", str(device) if device.type == "cpu"
                        else f"{device} ({torch.cuda.get_device_name(device)})")
    with plan_lock(out_dir):
        finished = plan(store, study)
    total = len(study.points())
    dev_data = DeviceData.put(data, device)
    store.set_user_attr("environment", environment(device))
    store.set_user_attr("activation_cost", activation_cost(
        sorted({study.config(p).activation for p in study.points()}), device))
    samples = out_dir / "samples"
    samples.mkdir(exist_ok=True)
    _save_npz(samples / "originals.npz",
              {"recon": (np.asarray(data.x_test[:RECON_IMAGES]) * 255).round().astype(np.uint8)})
    started = time.perf_counter()
    per_cohort = max(1, cohort_capacity(study, data, device) // len(study.seeds))
    bar = tqdm(total=total, initial=finished, disable=not progress, unit="trial",
               desc=f"{study.name} on {device}", dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} trials "
                          "[{elapsed}<{remaining}]")
    held: optuna.Trial | None = None
    try:
        while True:
            trials = [held] if held else []
            held = None
            while len(trials) < per_cohort:
                trial = _ask(store, study)
                if trial is None:
                    break
                key = cohort_key(study.config(decode_params(study, trial.params)))
                if trials and key != cohort_key(study.config(decode_params(study, trials[0].params))):
                    held = trial
                    break
                trials.append(trial)
            if not trials:
                break
            per_cohort = min(per_cohort, _train_trials(store, study, trials, dev_data, bar, samples))
    except BaseException:
        for trial in trials + ([held] if held else []):
            if store._storage.get_trial(trial._trial_id).state == optuna.trial.TrialState.RUNNING:
                trial.set_user_attr("interrupted", True)
                store.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    finally:
        bar.close()
        wall = store.user_attrs.get("wall_seconds", 0.0) + time.perf_counter() - started
        store.set_user_attr("wall_seconds", wall)  # summed over runs (resumes) of this study
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
    from ablate.activations import get_activation

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
    members, owner = [], {}
    for trial in trials:
        config = study.config(decode_params(study, trial.params))
        for seed in study.seeds:
            key = f"t{trial.number}-s{seed}"
            members.append(Member(key, config, seed))
            owner[key] = (trial, seed)
    epochs = members[0].config.epochs
    reported: set[tuple[int, int]] = set()

    def on_epoch(epoch: int, records: dict[str, dict]) -> set:
        by_trial: dict[int, list[float]] = {}
        for key, rec in records.items():
            by_trial.setdefault(owner[key][0].number, []).append(rec["test_nelbo"])
        for trial in trials:
            if trial.number in by_trial and (trial.number, epoch) not in reported:
                reported.add((trial.number, epoch))
                vals = by_trial[trial.number]
                trial.report(sum(vals) / len(vals), epoch)
        bar.update(len(records) / (epochs * len(study.seeds)))
        return set()

    outcomes, fitted = _train_fitting(members, dev_data, study, on_epoch, bar)
    for trial in trials:
        mine = sorted([(owner[k][1], o) for k, o in outcomes.items() if owner[k][0] is trial],
                      key=lambda p: p[0])
        _save_npz(samples / f"t{trial.number}.npz",  # before tell: a told trial has its images
                  {f"s{seed}_{kind}": img for seed, o in mine for kind, img in o.images.items()})
        _tell(store, study, trial, mine)
    bar.n = round(bar.n)  # members that stopped early leave fractional progress behind
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
