"""Every device of a machine on one study: `ablate run STUDY --workers N` (or `--devices ...`).

Owns: starting N local workers — each a plain `ablate run --no-report` process on the same
store, one per listed device, or on a CPU a share of the cores each — following their progress
through the store (one bar for all of them), stopping them on an interrupt, and saying which
one failed and why. Does not own: what a worker does (runner.py: claiming trials under the
store's lock, so every member trains once), the store (store.py) or the progress counts
(status.py). The report is built once, by the caller, when every worker has finished.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from ablate.errors import UserError
from ablate.run.status import expected, progress
from ablate.run.store import Backend
from ablate.study.schema import Study

POLL_SECONDS = 1.0


def worker_commands(study_file: str, results: str, n: int, devices: list[str], overrides: list[str],
                    storage: str | None) -> list[tuple[list[str], dict[str, str]]]:
    """Each worker's command line and environment: the same study, overrides and store; its
    own device (`devices`), or on the CPU an equal share of the cores (OMP_NUM_THREADS)."""
    base = [sys.executable, "-m", "ablate", "run", study_file, "--results", results, "--no-report",
            "--no-progress", *(a for o in overrides for a in ("--set", o)),
            *(["--storage", storage] if storage else [])]
    threads = str(max(1, (os.cpu_count() or 1) // n))
    out = []
    for i in range(n):
        if devices:
            out.append(([*base, "--set", f"device={devices[i]}"], dict(os.environ)))
        else:
            out.append((base, {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}))
    return out


def run_workers(study: Study, study_file: str, results: str, n: int, devices: list[str],
                overrides: list[str], storage: str | None, show: bool) -> Path:
    """Run the study's unfinished trials on `n` local workers and wait for them all; one
    progress bar counts the trials the store holds as finished. A worker that fails ends the
    others and raises a UserError with its last message line."""
    out_dir = Path(results) / study.name
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(n)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
             for (cmd, env), log in zip(worker_commands(study_file, results, n, devices, overrides, storage), logs)]
    bar = tqdm(total=expected(study)[0], disable=not show, smoothing=0, dynamic_ncols=True,
               desc=f"{study.name} on {n} workers: training",
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} trials [{elapsed}<{remaining}]")
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(POLL_SECONDS)
            if any(p.returncode not in (None, 0) for p in procs):
                break
            bar.n = _finished(study, out_dir)
            bar.refresh()
        bar.n = _finished(study, out_dir)
        bar.refresh()
    except BaseException:
        _stop(procs)
        raise
    finally:
        bar.close()
    failed = [(i, p) for i, p in enumerate(procs) if p.wait() != 0]
    if failed:
        _stop(procs)
        i, p = failed[0]
        logs[i].seek(0)
        last = ([line for line in logs[i].read().splitlines() if line.strip()] or ["(no message)"])[-1]
        raise UserError(f"worker {i + 1} of {n} stopped with exit code {p.returncode}: "
                        f"{last.removeprefix('ablate: error: ')}")
    return out_dir


def _finished(study: Study, out_dir: Path) -> int:
    """Trials the store holds as finished (0 before a worker has created it)."""
    try:
        return progress(study, Backend(study, out_dir).reader()).finished
    except Exception:  # noqa: BLE001 - no store yet, or one being created: nothing finished
        return 0


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
