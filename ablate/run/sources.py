"""Where trials come from: the Optuna studies a run draws from, and planning them. Torch-free.

Owns: `Source` (one Optuna study: what its trials sample, their seeds, the grid points to queue
or the search budget, the values all its trials share), planning a source under the study's
lock (dead workers' trials failed and their configurations queued again; grid points queued),
asking trials from every source in one claim, the samplers and pruners, and the tuned
protocol's sources: one TPE search on validation per activation and cell, then the final
arms (fixed and tuned) as the study's own grid. Does not own: training (runner.py), the lock,
heartbeats and Optuna's internals (store.py).

A trial is one configuration; its seeds are its members. A grid is planned as WAITING trials
in Optuna's queue, popped one by one; a search asks its sampler (TPE with constant liar, so
trials asked at once are not copies of one guess). Claims happen under the study's lock, so two
workers never take one grid point and a search never exceeds its budget. A trial left RUNNING
by a worker that died is failed and its configuration queued again: nothing is lost and
nothing is counted twice.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from ablate.run.store import (WORKER, Backend, Heartbeat, best_tuned, counted, decode_params, distributions,
                              encode_value, fail_interrupted, point_id, queued_params, stale, tuning_name,
                              was_queued)
from ablate.streams import TUNING_SEED
from ablate.study.schema import ARMS, RunConfig, Study

MODEL_ROUNDS = 6
"""A model-based sampler (tpe, cmaes, the protocol's tuning) asks budget / MODEL_ROUNDS trials
per claim by default, so it learns from about six rounds of results instead of guessing all at
once."""


@dataclass
class Source:
    """One Optuna study the run loop draws trials from."""

    store: optuna.Study
    dists: dict
    """What `ask` samples (every parameter a trial of this source has)."""
    seeds: tuple[int, ...]
    """Each trial's members."""
    point: dict = field(default_factory=dict)
    """Config values every trial shares (a tuning search's activation and cell)."""
    points: Callable[[], list[dict]] | None = None
    """A grid: the points to queue, decided under the lock when planning. None: a search."""
    budget: int | None = None
    """A search: the counted trials it may ask for."""
    per_claim: int | None = None
    """At most this many new trials per claim (a model-based sampler learns between claims)."""
    prune: bool = False
    images: bool = True
    """Whether members keep their images (samples/t<number>.npz) for the report."""
    size: int = 0
    """Trials this source trains in all (for the progress bar)."""

    def config(self, study: Study, params: dict) -> RunConfig:
        """A trial's configuration from its stored parameters."""
        return self.point_config(study, decode_params(study, params))

    def point_config(self, study: Study, point: dict) -> RunConfig:
        """The configuration of a point (decoded values; the arm is not a model setting)."""
        return study.config({**self.point, **{k: v for k, v in point.items() if k != "arm"}})


@dataclass
class Plan:
    """A source's state after planning: what is finished, queued, and spent of its budget."""

    finished: int
    waiting: int
    counted: int

    def budget(self, source: Source) -> int:
        """New trials a search may still ask for (queued ones are already counted)."""
        return 0 if source.points is not None else max(0, source.budget - self.counted)


def plan(source: Source, study: Study) -> Plan:
    """Under the study's lock: fail the trials of dead workers and queue their configurations
    again; for a grid, queue every point not done, queued or running."""
    store = source.store
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
            if source.points is None and t.number not in rerun:  # the same configuration, again
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
    if source.points is not None:
        for point in sorted(source.points(), key=lambda p: source.point_config(study, p).cohort_key):
            pid = point_id(point)
            if pid not in done and pid not in claimed:
                enqueue({k: encode_value(v) for k, v in point.items()})
                claimed.add(pid)
    return Plan(finished, waiting, n_counted)


def claim(sources: list[Source], study: Study, backend: Backend, heart: Heartbeat,
          members: int) -> list[tuple[Source, optuna.Trial]]:
    """Under the lock: plan every source, then take trials worth up to `members` members (at
    least one trial): queued ones first, then new ones from each search while its budget and
    per-claim limit allow."""
    taken: list[tuple[Source, optuna.Trial]] = []
    room = members
    with backend.lock():
        for source, state in [(s, plan(s, study)) for s in sources]:
            waiting, budget, new = state.waiting, state.budget(source), 0
            while (waiting > 0 or (budget > 0 and new < (source.per_claim or budget))) \
                    and (not taken or room >= len(source.seeds)):
                trial = source.store.ask(source.dists)
                if was_queued(source.store, trial):
                    waiting -= 1
                elif source.points is not None:  # the queue was emptied by a process not under our lock
                    trial.set_user_attr("spurious", True)
                    source.store.tell(trial, state=TrialState.FAIL)
                    break
                else:
                    budget, new = budget - 1, new + 1
                trial.set_user_attr("worker", WORKER)
                heart.hold(trial)
                taken.append((source, trial))
                room -= len(source.seeds)
    return taken


# ----------------------------------------------------------------------------- samplers, pruners
def max_epochs(study: Study) -> int:
    ranges = {**study.ranges, **(study.protocol.ranges if study.protocol else {})}
    if "epochs" in ranges:
        return int(ranges["epochs"].high)
    space = {**study.space, **(study.protocol.space if study.protocol else {})}
    return max(space.get("epochs", (study.base.epochs,)))


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


def search_limit(study: Study) -> int | None:
    """New trials a search asks per claim: search.cohort_trials, or for a model-based sampler
    n_trials / MODEL_ROUNDS; None: as many as fit."""
    s = study.search
    if s.cohort_trials:
        return s.cohort_trials
    if s.strategy in ("tpe", "cmaes"):
        return max(1, math.ceil(s.n_trials / MODEL_ROUNDS))
    return None


# ----------------------------------------------------------------------------- the sources
def sources(study: Study, store: optuna.Study, backend: Backend, worker_index: int) -> list[Source]:
    """Every source a run of `study` draws from: its own grid or search; for the tuned protocol
    first one tuning search per activation and cell, then the final arms."""
    if study.protocol is None:
        grid = study.search.is_grid
        return [Source(store, distributions(study.space, study.ranges), study.seeds,
                       points=study.points if grid else None,
                       budget=None if grid else study.search.n_trials,
                       per_claim=search_limit(study), prune=study.search.pruner != "none",
                       size=len(study.points()) if grid else study.search.n_trials)]
    tuning = [tuning_source(study, backend, cell, i, worker_index)
              for i, cell in enumerate(study.points())]
    main = Source(store, final_distributions(study), study.seeds,
                  points=lambda: final_points(study, tuning), size=len(study.points()) * len(ARMS))
    return [*tuning, main]


def tuning_source(study: Study, backend: Backend, cell: dict, index: int, worker_index: int) -> Source:
    """One activation and cell: a TPE search on validation over the protocol's tuned keys,
    `budget` trials of the tuning seed; seeded per cell and worker."""
    p = study.protocol
    store = optuna.create_study(study_name=tuning_name(study, cell), storage=backend.rdb(),
                                load_if_exists=True, direction=study.search.direction)
    store.sampler = optuna.samplers.TPESampler(
        seed=study.search.sampler_seed + 10_007 * worker_index + index, constant_liar=True,
        multivariate=True, n_startup_trials=max(2, p.budget // 2))
    store.pruner = make_pruner(study)
    return Source(store, distributions(p.space, p.ranges), (TUNING_SEED,), point=cell, budget=p.budget,
                  per_claim=max(1, math.ceil(p.budget / MODEL_ROUNDS)),
                  prune=study.search.pruner != "none", images=False, size=p.budget)


def final_distributions(study: Study) -> dict:
    """The final arms' parameters: the grid's axes, the arm, and every tuned key — over a
    domain wide enough for the study's own (fixed) value too."""
    p, base = study.protocol, study.base
    space = {k: tuple(dict.fromkeys((*values, getattr(base, k)))) for k, values in p.space.items()}
    ranges = {k: replace(r, low=min(r.low, getattr(base, k)), high=max(r.high, getattr(base, k)))
              for k, r in p.ranges.items()}
    return {**distributions(study.space, study.ranges), "arm": CategoricalDistribution(list(ARMS)),
            **distributions(space, ranges)}


def final_points(study: Study, tuning: list[Source]) -> list[dict]:
    """The final arms as grid points: the fixed arm of every cell and activation at once, the
    tuned arm of each as soon as its tuning search has finished."""
    fixed = {k: getattr(study.base, k) for k in study.protocol.keys}
    points = [{**p, "arm": "fixed", **fixed} for p in study.points()]
    for source in tuning:
        best = best_tuned(study, source.store.get_trials(deepcopy=False))
        if best is not None:
            points.append({**source.point, "arm": "tuned", **best[0]})
    return points
