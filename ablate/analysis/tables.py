"""The store → tidy DataFrames: runs (one row per trial × seed) and epochs; CSV export.

Owns: reading finished trials' records out of the Optuna storage. Does not own: statistics
(stats.py), figures (plots.py), or what each metric column means (metrics.py). Tables can
always be rebuilt from the store.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd

from ablate.analysis.stats import bootstrap_ci
from ablate.files import atomic_open
from ablate.metrics import FINAL, METRICS
from ablate.store import decode_params
from ablate.study import RunConfig, Study

CONFIG_COLUMNS = list(RunConfig.__dataclass_fields__)
RUN_COLUMNS = ["trial", *CONFIG_COLUMNS, "seed", "status",
               *(m for m in FINAL if METRICS[m].split != "none"),
               "epochs_run", "train_seconds", "fail_epoch", "reason"]


def _finished(store: optuna.Study):
    for t in store.get_trials(deepcopy=False):
        if t.state.is_finished() and "members" in t.user_attrs:
            yield t


def runs_frame(store: optuna.Study, study: Study) -> pd.DataFrame:
    """One row per member: its configuration, seed, status and every metric."""
    rows = []
    for t in _finished(store):
        config = study.config(decode_params(study, t.params)).__dict__
        for m in t.user_attrs["members"]:
            row = {"trial": t.number, **config, **m}
            row["hidden"] = "-".join(map(str, config["hidden"]))
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=RUN_COLUMNS + ["kl_per_dim"])
    extra = [c for c in frame.columns if c not in RUN_COLUMNS]
    return frame[RUN_COLUMNS + extra].sort_values(["trial", "seed"]).reset_index(drop=True)


def epochs_frame(store: optuna.Study, study: Study) -> pd.DataFrame:
    """One row per member and epoch: train loss, recon, KL and test negative ELBO."""
    rows = []
    for t in _finished(store):
        params = decode_params(study, t.params)
        config = study.config(params)
        ident = {"trial": t.number, "activation": config.activation,
                 "latent_dim": config.latent_dim, "kl_weight": config.kl_weight,
                 **{k: v for k, v in params.items() if k not in ("activation", "latent_dim", "kl_weight")}}
        for seed, history in t.user_attrs["epochs"].items():
            rows.extend({**ident, "seed": int(seed), **rec} for rec in history)
    return pd.DataFrame(rows)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically: a reader never sees half a file."""
    with atomic_open(path) as f:
        frame.to_csv(f, index=False)


TRIAL_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def trials_frame(store: optuna.Study, study: Study) -> pd.DataFrame:
    """One row per finished trial (a configuration and all its seeds): its parameters, state,
    objective (mean over the seeds that trained to the end, with a 95% bootstrap CI over
    them), the epochs it ran and its members' train seconds. Pruned trials carry the last per-epoch
    value a pruner saw, in `value`; trials of dead workers (re-run elsewhere) are left out."""
    objective = study.search.objective
    keys = [*({"activation": None} if "activation" not in study.space else {}), *study.space, *study.ranges]
    rows = []
    for t in _finished(store):
        if t.user_attrs.get("interrupted"):
            continue
        params = decode_params(study, t.params)
        members = t.user_attrs["members"]
        ok = [m[objective] for m in members if m["status"] == "ok" and objective in m]
        mean, lo, hi = bootstrap_ci(ok)
        config = study.config(params)
        rows.append({"trial": t.number, **{k: getattr(config, k) for k in keys},
                     "state": TRIAL_STATES.get(t.state.name, t.state.name.lower()),
                     "value": t.value if t.value is not None else float("nan"),
                     objective: mean, "ci_low": lo, "ci_high": hi, "seeds_ok": len(ok),
                     "epochs_run": max((m.get("epochs_run") or 0) for m in members),
                     "epochs": config.epochs,
                     "train_seconds": sum(m.get("train_seconds") or 0.0 for m in members)})
    columns = ["trial", *keys, "state", "value", objective, "ci_low", "ci_high", "seeds_ok",
               "epochs_run", "epochs", "train_seconds"]
    frame = pd.DataFrame(rows, columns=columns)
    if "hidden" in frame:
        frame["hidden"] = frame["hidden"].map(lambda h: "-".join(map(str, h)))
    return frame.sort_values("trial").reset_index(drop=True)
