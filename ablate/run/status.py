"""A study's progress as its store says it (`ablate status`), while it runs or after. Torch-free.

Owns: counting trials by state across the study's Optuna studies (its own and, for the tuned
protocol, each tuning search), the members done, the trials running with their worker and the
age of its last heartbeat, and an ETA from the pace of finished trials. Does not own: the
store, the lock or heartbeats (store.py) or planning (sources.py); it reads and never writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from ablate.run.store import counted, stale
from ablate.study.schema import ARMS, Study


@dataclass
class Progress:
    """Trials of a study by state, summed over its Optuna studies."""

    total: int
    members_total: int
    finished: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    queued: int = 0
    interrupted: int = 0
    members_done: int = 0
    running: list[tuple[FrozenTrial, str]] = field(default_factory=list)
    """(trial, the Optuna study it is in), in the order they started."""
    first_start: float | None = None
    last_finish: float | None = None

    def eta_seconds(self) -> float | None:
        """Remaining trials at the pace trials finished so far (all workers together)."""
        if not self.finished or self.first_start is None or self.last_finish is None:
            return None
        pace = (self.last_finish - self.first_start) / self.finished
        return max(0.0, (self.total - self.finished) * pace)


def expected(study: Study) -> tuple[int, int]:
    """Trials and members the study trains in all."""
    seeds, points = len(study.seeds), len(study.points())
    if study.protocol is not None:
        return (points * study.protocol.budget + points * len(ARMS),
                points * study.protocol.budget + points * len(ARMS) * seeds)
    trials = points if study.search.is_grid else study.search.n_trials
    return trials, trials * seeds


def progress(study: Study, storage) -> Progress:
    """Read every Optuna study of `study` in `storage` (an RDBStorage or URL)."""
    total, members = expected(study)
    out = Progress(total, members)
    names = [n for n in optuna.get_all_study_names(storage)
             if n == study.name or n.startswith(f"{study.name}/tune/")]
    for name in names:
        store = optuna.load_study(study_name=name, storage=storage)
        for t in store.get_trials(deepcopy=False):
            _count(out, t, name)
    out.running.sort(key=lambda p: p[0].datetime_start.timestamp() if p[0].datetime_start else 0)
    return out


def _count(out: Progress, t: FrozenTrial, name: str) -> None:
    if t.user_attrs.get("spurious"):
        return
    if not counted(t):
        out.interrupted += 1
        return
    if t.datetime_start is not None:
        start = t.datetime_start.timestamp()
        out.first_start = start if out.first_start is None else min(out.first_start, start)
    if t.state == TrialState.WAITING:
        out.queued += 1
    elif t.state == TrialState.RUNNING:
        out.running.append((t, name))
    elif t.state.is_finished() and "members" in t.user_attrs:
        out.finished += 1
        out.complete += t.state == TrialState.COMPLETE
        out.pruned += t.state == TrialState.PRUNED
        out.failed += t.state == TrialState.FAIL
        out.members_done += len(t.user_attrs["members"])
        if t.datetime_complete is not None:
            end = t.datetime_complete.timestamp()
            out.last_finish = end if out.last_finish is None else max(out.last_finish, end)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def lines(study: Study, p: Progress, now: float | None = None) -> list[str]:
    """The status as a person reads it."""
    now = time.time() if now is None else now
    out = [f"study {study.name}: {p.finished} of {p.total} trials finished ({p.complete} "
           f"complete, {p.pruned} pruned, {p.failed} failed), {len(p.running)} running, "
           f"{p.queued} queued; {p.members_done} of {p.members_total} members done"
           + (f"; {p.interrupted} trials of dead workers failed and queued again" if p.interrupted else "")]
    workers: dict[str, list[tuple[FrozenTrial, str]]] = {}
    for t, name in p.running:
        workers.setdefault(t.user_attrs.get("worker", "?"), []).append((t, name))
    for worker, held in workers.items():
        beats = [t.user_attrs.get("heartbeat") for t, _ in held if t.user_attrs.get("heartbeat")]
        age = f"last heartbeat {_duration(now - max(beats))} ago" if beats else "no heartbeat yet"
        gone = any(stale(t.user_attrs, t.datetime_start.timestamp() if t.datetime_start else None, now)
                   for t, _ in held)
        trials = ", ".join(f"{t.number}" + (f" ({n.split('/tune/')[1]})" if "/tune/" in n else "")
                           for t, n in held)
        out.append(f"  worker {worker}: trials {trials}; {age}"
                   + ("; gone (its trials run again at the next claim)" if gone else ""))
    eta = p.eta_seconds()
    if p.finished >= p.total:
        out.append("done.")
    elif eta is not None:
        out.append(f"ETA: about {_duration(eta)} at the pace of the {p.finished} trials finished "
                   "so far (all workers together)")
    else:
        out.append("ETA: after the first trials finish")
    return out
