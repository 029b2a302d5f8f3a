"""Tracking integrations: a study's trials in MLflow and TensorBoard, beside ablate's own store.

Owns: the `tracking:` section's meaning — `mlflow: {uri, experiment}` logs each told trial as
an MLflow run (its parameters, per-epoch curves, final metrics, state) and the report as the
artifacts of a run named `report`; `tensorboard: {dir}` writes the same curves and the trial's
hyperparameters and final metrics through `torch.utils.tensorboard` — checking the packages are
installed before anything is written, and never letting a tracking failure stop a study (one
warning, then that tracker is off): an MLflow server is probed once before training and MLflow's
network calls time out in seconds (MLFLOW_NETWORK), so one that cannot be reached costs seconds,
not minutes. Does not own: what the numbers are (training/, metrics.py)
or the report (analysis/).

Curves are the mean over a trial's seeds at each epoch (`val_nelbo`, `train_loss`, …), with
each seed's own as `seed<s>/<name>`; final metrics, as `final/<metric>` (apart from the curves,
some of which share their names), are the mean over the members that trained to the end.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from ablate.errors import UserError
from ablate.study.schema import Study

EXTRAS = {"mlflow": ("mlflow", "ablate[mlflow]"), "tensorboard": ("tensorboard", "ablate[tensorboard]")}
MLFLOW_NETWORK = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
"""MLflow's HTTP limits for ablate's calls (its defaults: 120 s a request, 7 retries backing off
for minutes): a server that stops answering costs seconds. A value the user set is kept."""
PROBE_S = 3.0
"""How long the probe of an MLflow server waits for a connection."""


def check(study: Study) -> None:
    """Every tracker the study asks for can be imported; else one error naming the fix."""
    for name in study.tracking:
        module, extra = EXTRAS[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module blocked or broken in sys.modules
            found = False
        if not found:
            raise UserError(f"{study.path}: tracking.{name}: the {module} package is not "
                            f"installed; pip install '{extra}', or remove tracking.{name}.")


def mlflow_uri(study: Study, out_dir: Path) -> str:
    """The MLflow tracking URI: the YAML's, else an SQLite file in the results folder (MLflow's
    local store; its plain-folder store is in maintenance mode and refused by default)."""
    given = study.tracking["mlflow"].get("uri")
    return given or f"sqlite:///{(Path(out_dir) / 'mlflow.db').resolve()}"


@functools.cache
def reachable(uri: str) -> bool:
    """Whether something answers at an HTTP(S) tracking URI (or at the proxy that would carry
    it), tried once per process with a PROBE_S timeout; a miss prints the one warning. Other
    URIs (a local SQLite file, say) are not probed."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return True
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        parts = urlsplit(proxy)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=PROBE_S).close()
        return True
    except (OSError, ValueError) as exc:  # refused, timed out, unknown host, a port not a number
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        print(f"ablate: warning: tracking.mlflow: nothing answers at {parts.netloc.rpartition('@')[2]} "
              f"({reason}); it is off for this run, the study goes on.", file=sys.stderr)
        return False


def tensorboard_dir(study: Study, out_dir: Path) -> Path:
    given = study.tracking["tensorboard"].get("dir")
    return Path(given).expanduser() if given else Path(out_dir) / "tensorboard"


class Trackers:
    """The study's trackers for one run; `trial` after each tell, `report` at the end."""

    def __init__(self, study: Study, out_dir: Path):
        self.study, self.out_dir = study, Path(out_dir)
        self.live = dict.fromkeys(study.tracking, True)
        if "mlflow" in self.live:
            self.live["mlflow"] = reachable(mlflow_uri(study, out_dir))
        self._mlflow = None

    @property
    def active(self) -> bool:
        """Whether any tracker is on (else the run loop builds no records for them)."""
        return any(self.live.values())

    def _guard(self, name: str, action) -> None:
        if not self.live.get(name):
            return
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - a tracker's trouble never stops a study
            self.live[name] = False
            print(f"ablate: warning: tracking.{name} failed ({type(exc).__name__}: "
                  f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); it is off for the rest "
                  "of this run, the study goes on.", file=sys.stderr)

    def trial(self, record: dict) -> None:
        """One told trial: {name, number, state, params, members: [{seed, status, metrics…}],
        epochs: {seed: [record, …]}}."""
        self._guard("mlflow", lambda: self._mlflow_trial(record))
        self._guard("tensorboard", lambda: _tensorboard_trial(
            tensorboard_dir(self.study, self.out_dir), record))

    def report(self, paths: list[Path]) -> None:
        self._guard("mlflow", lambda: self._mlflow_report(paths))

    # ------------------------------------------------------------------ MLflow
    def _client(self):
        if self._mlflow is None:
            for quiet in ("mlflow", "alembic"):
                logging.getLogger(quiet).setLevel(logging.WARNING)
            for name, value in MLFLOW_NETWORK.items():
                os.environ.setdefault(name, value)
            from mlflow.tracking import MlflowClient

            uri = mlflow_uri(self.study, self.out_dir)
            client = MlflowClient(tracking_uri=uri)
            name = self.study.tracking["mlflow"].get("experiment") or self.study.name
            found = client.get_experiment_by_name(name)
            if found is not None:
                experiment = found.experiment_id
            else:
                where = None
                if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the cwd
                    where = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
                experiment = client.create_experiment(name, artifact_location=where)
            self._mlflow = (client, experiment)
        return self._mlflow

    def _mlflow_trial(self, record: dict) -> None:
        from mlflow.entities import Metric, Param

        client, experiment = self._client()
        run = client.create_run(experiment, run_name=f"{record['name']}/t{record['number']}",
                                tags={"ablate.study": self.study.name, "ablate.trial": str(record["number"])})
        now = int(time.time() * 1000)
        params = [Param(k, str(v)[:500]) for k, v in sorted(record["params"].items())]
        metrics = [Metric(k, v, now, step) for k, step, v in curve_points(record)]
        metrics += [Metric(f"final/{k}", v, now, 0) for k, v in final_means(record).items()]
        run_id = run.info.run_id
        for i in range(0, len(params), 100):  # MLflow's limits per batch
            client.log_batch(run_id, params=params[i:i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        client.set_tag(run_id, "ablate.state", record["state"])
        client.set_terminated(run_id, "FAILED" if record["state"] == "failed" else "FINISHED")

    def _mlflow_report(self, paths: list[Path]) -> None:
        client, experiment = self._client()
        runs = client.search_runs([experiment], filter_string="tags.`ablate.kind` = 'report'", max_results=1)
        run_id = runs[0].info.run_id if runs else client.create_run(
            experiment, run_name=f"{self.study.name}/report",
            tags={"ablate.study": self.study.name, "ablate.kind": "report"}).info.run_id
        for path in paths:
            if Path(path).is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=Path(path).name)
            elif Path(path).exists():
                client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")


def curve_points(record: dict) -> list[tuple[str, int, float]]:
    """(name, epoch, value): each seed's per-epoch values as seed<s>/<name>, and their mean
    over the seeds that have the epoch as <name>; non-finite values left out."""
    points, sums = [], {}
    for seed, history in record["epochs"].items():
        for row in history:
            for k, v in row.items():
                if k == "epoch" or not isinstance(v, (int, float)) or not math.isfinite(v):
                    continue
                points.append((f"seed{seed}/{k}", int(row["epoch"]), float(v)))
                sums.setdefault((k, int(row["epoch"])), []).append(float(v))
    points += [(k, epoch, sum(vs) / len(vs)) for (k, epoch), vs in sums.items()]
    return points


def final_means(record: dict) -> dict[str, float]:
    """Each final metric's mean over the trial's members that trained to the end."""
    ok = [m for m in record["members"] if m["status"] == "ok"]
    out = {"members_ok": float(len(ok))}
    for k in {k for m in ok for k in m}:
        vals = [m[k] for m in ok if isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)
                and math.isfinite(m[k])]
        if vals and k not in ("seed", "fail_epoch"):
            out[k] = sum(vals) / len(vals)
    return out


def _tensorboard_trial(root: Path, record: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    folder = root / record["name"].replace("/", "_") / f"t{record['number']}"
    with SummaryWriter(log_dir=str(folder)) as writer:
        for name, epoch, value in curve_points(record):
            writer.add_scalar(name, value, epoch)
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                   for k, v in record["params"].items()}
        metrics = {f"final/{k}": v for k, v in final_means(record).items()}
        writer.add_hparams(hparams, metrics, run_name=".")
