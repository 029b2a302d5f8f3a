"""The store → tidy DataFrames: runs (one row per trial × seed) and epochs; CSV export.

Owns: reading finished trials' records out of the Optuna storage. Does not own: statistics
(stats.py), figures (plots.py), or what each metric column means (metrics.py). Tables can
always be rebuilt from the store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from ablate.analysis.stats import t_ci
from ablate.files import atomic_open
from ablate.run.store import best_tuned, counted, decode_params, tuning_name
from ablate.study.metrics import FINAL, METRICS, twin_on_test
from ablate.study.schema import RunConfig, Study

CONFIG_COLUMNS = list(RunConfig.__dataclass_fields__)
RUN_COLUMNS = ["trial", *CONFIG_COLUMNS, "seed", "status",
               *(m for m in FINAL if METRICS[m].split != "none"),
               "epochs_run", "params", "flops", "train_seconds", "fail_epoch", "reason"]


def _finished(store: optuna.Study):
    """Finished trials that recorded their members, less a dead worker's (`interrupted`: killed
    after recording, before telling; its configuration ran again as another trial)."""
    for t in store.get_trials(deepcopy=False):
        if t.state.is_finished() and "members" in t.user_attrs and not t.user_attrs.get("interrupted"):
            yield t


LAYER_COLUMNS = ("hidden", "channels")
"""Config columns that hold layer sizes: shown as text, 256-128 (and channels empty for an
mlp, which has none)."""


def layer_columns(config: RunConfig) -> dict[str, str]:
    """A configuration's layer sizes as runs.csv shows them (a user's module's: empty)."""
    if config.module:
        return {"hidden": "", "channels": ""}
    return {"hidden": "-".join(map(str, config.hidden)),
            "channels": "-".join(map(str, config.channels)) if config.arch == "conv" else ""}


def _joined(frame: pd.DataFrame) -> pd.DataFrame:
    """Layer-size columns of a trials table as text (tuples → 256-128)."""
    for c in LAYER_COLUMNS:
        if c in frame:
            frame[c] = frame[c].map(lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else v)
    return frame


def _decoded(study: Study, t: FrozenTrial) -> tuple[dict, RunConfig, dict]:
    """A trial's decoded parameters, its configuration, and its arm as a column (the tuned
    protocol's final arms; nothing otherwise)."""
    params = decode_params(study, t.params)
    arm = {"arm": params.pop("arm")} if "arm" in params else {}
    return params, study.config(params), arm


def runs_frame(store: optuna.Study, study: Study) -> pd.DataFrame:
    """One row per member: its configuration, seed, status and every metric."""
    columns = ["trial", *(["arm"] if study.protocol else []), *RUN_COLUMNS[1:]]
    rows = []
    for t in _finished(store):
        _, config, arm = _decoded(study, t)
        unused = {k: None for k in config.__dict__ if not config.applies(k)}  # left empty
        for m in t.user_attrs["members"]:
            rows.append({"trial": t.number, **arm, **config.__dict__, **unused, **m, **layer_columns(config)})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=columns + ["kl_per_dim"])
    frame = frame.reindex(columns=[*columns, *(c for c in frame.columns if c not in columns)])
    return frame.sort_values(["trial", "seed"]).reset_index(drop=True)


def epochs_frame(store: optuna.Study, study: Study) -> pd.DataFrame:
    """One row per member and epoch: training loss, recon and KL, and the validation negative
    ELBO and its parts."""
    rows = []
    for t in _finished(store):
        params, config, arm = _decoded(study, t)
        params.update(arm)
        ident = {"trial": t.number, "activation": config.activation,
                 "decoder_activation": config.decoder_activation,
                 "latent_dim": config.latent_dim, "kl_weight": config.kl_weight,
                 **{k: v for k, v in params.items() if k not in ("activation", "latent_dim", "kl_weight")}}
        for seed, history in t.user_attrs["epochs"].items():
            rows.extend({**ident, "seed": int(seed), **rec} for rec in history)
    return pd.DataFrame(rows)


def cell_axes(study: Study, runs: pd.DataFrame) -> list[str]:
    """The runs' comparison axes other than the contender (a matched block is one cell × seed):
    the study's space keys, and the tuned protocol's arm."""
    keys = [k for k in study.space if k not in CONTENDER and k in runs.columns]
    return keys + (["arm"] if study.protocol else [])


CONTENDER = ("activation", "decoder_activation")
"""What the statistics compare: the activation, or with decoder_activation an axis, the pair."""


def pair_contenders(study: Study, frame: pd.DataFrame) -> pd.DataFrame:
    """With decoder_activation an axis, the contender is the (encoder, decoder) pair: the
    activation column becomes `enc→dec`, and `encoder` and `decoder` keep the parts."""
    if "decoder_activation" not in study.space or frame.empty:
        return frame
    decoder = frame["decoder_activation"].fillna(frame["activation"]) \
        if "decoder_activation" in frame else frame["activation"]
    return frame.assign(encoder=frame["activation"], decoder=decoder,
                        activation=frame["activation"] + "→" + decoder)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically: a reader never sees half a file."""
    with atomic_open(path) as f:
        frame.to_csv(f, index=False)


TRIAL_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def trials_frame(store: optuna.Study, study: Study) -> pd.DataFrame:
    """One row per finished trial (a configuration and all its seeds): its parameters, state,
    objective (mean over the seeds that trained to the end, with a 95% Student-t interval over
    them), the epochs it ran and its members' train seconds. Pruned trials carry the last per-epoch
    value a pruner saw, in `value`; trials of dead workers (re-run elsewhere) are left out."""
    objective, reported = study.search.objective, twin_on_test(study.search.objective)
    keys = [*({"activation": None} if "activation" not in study.space else {}), *study.space, *study.ranges,
            *(study.protocol.keys if study.protocol else [])]
    rows = []
    for t in _finished(store):
        _, config, arm = _decoded(study, t)
        members = t.user_attrs["members"]
        ok = [m[objective] for m in members if m["status"] == "ok" and objective in m]
        mean, lo, hi = t_ci(ok)
        test = [m[reported] for m in members if m["status"] == "ok" and reported in m]
        rows.append({"trial": t.number, **arm, **{k: getattr(config, k) for k in keys},
                     "state": TRIAL_STATES.get(t.state.name, t.state.name.lower()),
                     "value": t.value if t.value is not None else float("nan"),
                     objective: mean, "ci_low": lo, "ci_high": hi, "seeds_ok": len(ok),
                     reported: float(np.mean(test)) if test else float("nan"),
                     "epochs_run": max((m.get("epochs_run") or 0) for m in members),
                     "epochs": config.epochs,
                     "train_seconds": sum(m.get("train_seconds") or 0.0 for m in members)})
    columns = ["trial", *(["arm"] if study.protocol else []), *keys, "state", "value", objective,
               "ci_low", "ci_high", "seeds_ok", *([reported] if reported != objective else []),
               "epochs_run", "epochs", "train_seconds"]
    frame = _joined(pd.DataFrame(rows, columns=columns))
    return frame.sort_values("trial").reset_index(drop=True)


def tuning_frame(storage, study: Study) -> pd.DataFrame:
    """The tuned protocol's tuning trials: one row per trial of every activation and cell's
    search (its cell, the tuned values, state, validation objective, and whether it is its
    search's best); empty for other studies."""
    if study.protocol is None:
        return pd.DataFrame()
    keys, objective = study.protocol.keys, study.search.objective
    rows = []
    for group in study.points():
        try:
            store = optuna.load_study(study_name=tuning_name(study, group), storage=storage)
        except KeyError:  # not started yet
            continue
        trials = store.get_trials(deepcopy=False)
        found = best_tuned(study, trials)
        best = found[1].number if found and found[1] is not None else None
        for t in trials:
            if not (t.state.is_finished() and counted(t)):
                continue
            config = study.config({**group, **decode_params(study, t.params)})
            rows.append({**group, "tune_trial": t.number, **{k: getattr(config, k) for k in keys},
                         "state": TRIAL_STATES.get(t.state.name, t.state.name.lower()),
                         objective: t.value if t.state.name == "COMPLETE" else float("nan"),
                         "best": t.number == best,
                         "train_seconds": sum(m.get("train_seconds") or 0.0 for m in t.user_attrs.get("members", []))})
    return _joined(pd.DataFrame(rows))
