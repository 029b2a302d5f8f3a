"""The study's Optuna storage: where it lives, connecting to it, one lock for all workers,
telling a live worker's trial from a dead one's, and every use of Optuna's insides.

Owns: storage URLs (the results folder's SQLite file, or a PostgreSQL URL that several machines
share), connection errors as one-line UserErrors with any password hidden, opening the store to
write or, for report / status / compare, to read only (nothing created, a database that is not
an Optuna store refused, a YAML whose settings differ from the store's refused), the planning
lock (flock for SQLite, a PostgreSQL advisory lock for a server), heartbeats, a trial's parameters
as Optuna stores them (encode/decode), and the few named functions that reach past Optuna's
public API (`trial_id`, `queued_params`, `was_queued`, `is_running`, `fail_interrupted`);
tests/unit/test_store.py fails if Optuna changes what they rely on. Torch-free.
Does not own: what is stored in it (runner.py writes trials, analysis/tables.py reads them).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import sqlite3
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import quote

import optuna
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.pool import NullPool

from ablate.errors import UserError
from ablate.files import writable_folder
from ablate.study.schema import Range, Study
from ablate.study.storage import redact

WORKER = f"{socket.gethostname()}:{os.getpid()}"
"""This process, as recorded on the trials it trains."""
SQLITE_TIMEOUT_S = 120  # a writer waits this long for another process's lock, not failing
OPTUNA_TABLES = {"studies", "trials", "version_info"}
"""Tables every Optuna store has: a database without them is not one, and a reader refuses it."""
HEARTBEAT_S = 20.0
"""How often a worker stamps the trials it is training."""
STALE_S = 300.0
"""A trial whose stamp is this old belongs to a dead worker (on any machine)."""


# ------------------------------------------------------------------------- Optuna's insides
# Optuna's public API has no id of a trial, no way to change a finished-or-running trial that
# another process holds, and no flag for "this trial came from the queue". These functions are
# the only places that reach past it.

def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (unique across studies, unlike its number)."""
    return trial._trial_id


def queued_params(t: FrozenTrial) -> dict:
    """A trial's parameters; for a queued trial not yet asked, the ones it was queued with."""
    return t.params or t.system_attrs.get("fixed_params", {})


def was_queued(store: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether an asked trial was popped from the queue (enqueue_trial), not sampled."""
    return "fixed_params" in store._storage.get_trial_system_attrs(trial_id(trial))


def stored_state(store: optuna.Study, trial: optuna.Trial | FrozenTrial) -> TrialState:
    """The trial's state as stored now (another process may have told it)."""
    return store._storage.get_trial(trial_id(trial)).state


def is_running(store: optuna.Study, trial: optuna.Trial | FrozenTrial) -> bool:
    return stored_state(store, trial) == TrialState.RUNNING


def fail_interrupted(store: optuna.Study, t: FrozenTrial) -> None:
    """Fail a RUNNING trial held by a dead worker, marked interrupted (its config runs again)."""
    store._storage.set_trial_user_attr(trial_id(t), "interrupted", True)
    store._storage.set_trial_state_values(trial_id(t), TrialState.FAIL)


def counted(t: FrozenTrial) -> bool:
    """Whether a trial counts toward n_trials: not a dead worker's (its configuration is queued
    again) and not an empty claim."""
    return not (t.user_attrs.get("spurious") or t.user_attrs.get("interrupted"))


# ------------------------------------------------------------------------- parameters
def encode_value(value):
    """Optuna categorical choices must be scalars: tuples (hidden widths) travel as JSON text."""
    return json.dumps(list(value)) if isinstance(value, tuple) else value


def decode_params(study: Study, params: dict) -> dict:
    """A trial's stored parameters → RunConfig field values (and a final arm's `arm`)."""
    choices = {**study.space, **(study.protocol.space if study.protocol else {})}
    return study.params({k: tuple(json.loads(v)) if k in choices and isinstance(choices[k][0], tuple)
                         else v for k, v in params.items()})


def point_id(point: dict) -> str:
    return json.dumps({k: encode_value(v) for k, v in sorted(point.items())})


def distributions(space: dict[str, tuple], ranges: dict[str, Range]) -> dict:
    """A search space as Optuna distributions: each list of values categorical, each range an
    int or float distribution (log-scaled when the range says)."""
    dists = {k: CategoricalDistribution([encode_value(v) for v in values]) for k, values in space.items()}
    for k, r in ranges.items():
        dists[k] = (IntDistribution(int(r.low), int(r.high), log=r.log) if r.integer
                    else FloatDistribution(r.low, r.high, log=r.log))
    return dists


# ------------------------------------------------------------------------- where it lives
def storage_url(study: Study, out_dir: Path) -> str:
    """The study's storage as an SQLAlchemy URL: results/<name>/study.db unless a URL is given."""
    if study.storage == "sqlite":
        return f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"
    _parsed(study.storage)  # refused as the user wrote it
    if study.storage.startswith("postgresql://"):  # the driver ablate installs (psycopg 3)
        return "postgresql+psycopg://" + study.storage.removeprefix("postgresql://")
    return study.storage


def _parsed(url: str) -> sqlalchemy.engine.URL:
    """The URL as SQLAlchemy reads it, or one line saying why it cannot (a port that is not a
    number, say), its password hidden without parsing it."""
    try:
        return sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        shown = re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
        shown = re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", shown)
        raise UserError(f"storage {shown}: is not a database URL ({exc}); write it as "
                        "postgresql://user@host:5432/db, the port a number.") from None


def is_local(study: Study) -> bool:
    """Whether the store is the results folder's own SQLite file."""
    return study.storage == "sqlite"


def _reason(exc: BaseException, url: str) -> str:
    """The driver's first line, with the URL's password hidden wherever it appears."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    line = redact(text.splitlines()[0] if text else type(exc).__name__)
    try:
        secret = sqlalchemy.engine.make_url(url).password
    except sqlalchemy.exc.ArgumentError:
        secret = None
    return (line.replace(secret, "***") if secret else line)[:300]


@contextmanager
def _storage_errors(url: str):
    """Driver and connection failures → one line naming the (redacted) URL and the fix."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise UserError(f"storage {redact(url)}: its database driver is not installed "
                        f"({exc.name}); install it, e.g. pip install 'psycopg[binary]'.") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        raise UserError(f"storage {redact(url)}: cannot open it ({_reason(exc, url)}). Check the URL, "
                        "that the server is running and that this user may connect "
                        "(a password is best kept in PGPASSWORD or ~/.pgpass).") from None


class Backend:
    """One study's storage and its lock; `rdb()` is what Optuna reads and writes, `reader()`
    what a command that only reads (report, status, compare) reads."""

    def __init__(self, study: Study, out_dir: Path):
        self.url = storage_url(study, out_dir)
        self.local = is_local(study)
        # An SQLite store is locked with a file beside it; a server with an advisory lock.
        self.lock_file = (_sqlite_file(self.url).parent / ".plan.lock"
                          if self.url.startswith("sqlite:///") else None)
        self.key = int.from_bytes(hashlib.sha256(f"ablate:{study.name}".encode()).digest()[:8],
                                  "big", signed=True)
        self._rdb: optuna.storages.RDBStorage | None = None
        self._lock_engine = None

    def rdb(self) -> optuna.storages.RDBStorage:
        """The storage, opened to write (the schema created under the lock) unless `reader()`
        opened it first."""
        if self._rdb is None:
            if self.lock_file is not None:
                writable_folder(self.lock_file.parent, "storage")
            with self.lock():  # the first connection creates the schema: one process at a time
                with _storage_errors(self.url):
                    kwargs = ({"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if self.lock_file
                              else {"pool_pre_ping": True})
                    self._rdb = optuna.storages.RDBStorage(self.url, engine_kwargs=kwargs)
        return self._rdb

    def reader(self) -> optuna.storages.RDBStorage:
        """The storage opened to read only: no lock taken, nothing created (no folder, file,
        table or row; an SQLite file is opened read-only), and a store that does not exist or
        lacks Optuna's tables refused before Optuna touches it. Opened to write already, it is
        read through that."""
        if self._rdb is None:
            with _storage_errors(self.url):
                missing = OPTUNA_TABLES - _tables(self.url)
                if missing:
                    raise UserError(f"storage {redact(self.url)}: is not a store `ablate run` "
                                    f"wrote (it lacks Optuna's tables {', '.join(sorted(missing))}); "
                                    "check --storage (or the study's storage:). Nothing was changed.")
                url, kwargs = self.url, {"pool_pre_ping": True}
                if self.lock_file is not None:  # SQLite's own read-only mode
                    path = quote(str(_sqlite_file(self.url).resolve()))
                    url = f"sqlite:///file:{path}?mode=ro&uri=true"
                    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
                self._rdb = optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                                       skip_table_creation=True)
        return self._rdb

    @contextmanager
    def lock(self):
        """Exclusive among every worker of this study, on this machine or any other: held
        while creating the schema, planning the grid, failing dead workers' trials and asking
        a cohort, so two workers never claim the same point or exceed n_trials."""
        if self.lock_file is not None:
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.lock_file, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        with _storage_errors(self.url):
            if self._lock_engine is None:  # NullPool: closing really disconnects, freeing the lock
                self._lock_engine = sqlalchemy.create_engine(self.url, poolclass=NullPool)
            conn = self._lock_engine.connect()
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        try:
            yield
        finally:
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            finally:
                conn.close()


def _tables(url: str) -> set[str]:
    """The names of the tables of the database at `url`, read without writing anything: an
    SQLite file opened read-only (a missing one refused, not created)."""
    if url.startswith("sqlite:"):
        path = _sqlite_file(url)
        if not os.path.isfile(path):
            raise UserError(f"storage {redact(url)}: no such file; give the --storage (or the "
                            "study's storage:) that `ablate run` was given, or run the study first.")
        try:
            with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                         timeout=SQLITE_TIMEOUT_S)) as conn:
                rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                return {name for (name,) in rows}
        except sqlite3.Error as exc:
            raise UserError(f"storage {redact(url)}: cannot be read as a store ({exc}); check "
                            "--storage (or the study's storage:). Nothing was changed.") from None
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _sqlite_file(url: str) -> Path:
    return Path(_parsed(url).database or "")


def _where(study: Study, out_dir: Path) -> str:
    """The store as a message names it: the results folder, or the (redacted) storage URL."""
    return str(out_dir) if is_local(study) else f"storage {redact(storage_url(study, out_dir))}"


def open_store(study: Study, out_dir: Path, create: bool, backend: Backend | None = None) -> optuna.Study:
    """The study's Optuna record. With `create`, make it (objective direction from the study)
    and record what it is; otherwise load it, read-only unless the backend has opened the
    storage to write, or raise a UserError when there is none."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = backend or Backend(study, out_dir)
    if not create:
        try:
            return optuna.load_study(study_name=study.name, storage=backend.reader())
        except KeyError:
            raise UserError(f"{_where(study, out_dir)} holds no study named '{study.name}'; run it "
                            "first with `ablate run STUDY.yaml` (with the same --storage).") from None
    storage = backend.rdb()
    store = optuna.create_study(study_name=study.name, storage=storage, load_if_exists=True,
                                direction=study.search.direction)
    if store.user_attrs.get("fingerprint") is None:
        store.set_user_attr("fingerprint", study.fingerprint())
        store.set_user_attr("metric", study.search.objective)
        store.set_user_attr("seeds", list(study.seeds))
    return store


def create_store(study: Study, out_dir: Path, backend: Backend) -> optuna.Study:
    """The study's Optuna record, created if new, after refusing one that holds results of a
    study of the same name with other settings. The check and the creation happen under the
    study's lock, so two workers started at once with different settings cannot both pass the
    check before either has recorded its fingerprint: the second one sees the first's."""
    storage = backend.rdb()  # (creates the schema under the lock itself)
    with backend.lock():
        if study.name in optuna.get_all_study_names(storage):
            _same_settings(study, out_dir, open_store(study, out_dir, create=False, backend=backend),
                           "Give this study another name, use --results elsewhere"
                           + (f", or remove {out_dir}." if backend.local else "."))
        store = open_store(study, out_dir, create=True, backend=backend)
        if store.user_attrs.get("settings") is None:
            store.set_user_attr("settings", study.settings_record())
        return store


def read_store(study: Study, out_dir: Path, backend: Backend | None = None) -> optuna.Study:
    """The study's Optuna record for a command that only reads, refused (as `ablate run`
    refuses it) when the store's study of this name was run with other settings: its numbers
    would be reported as this YAML's."""
    store = open_store(study, out_dir, create=False, backend=backend)
    _same_settings(study, out_dir, store, f"Give the results folder ({out_dir}) instead, or the "
                                          "YAML it was run with.")
    return store


def _same_settings(study: Study, out_dir: Path, store: optuna.Study, fix: str) -> None:
    """Refuse a store whose study of this name was run with other settings, naming the keys."""
    known = store.user_attrs.get("fingerprint")
    if known is not None and known != study.fingerprint():
        differs = settings_difference(store.user_attrs.get("settings"), study.settings_record())
        raise UserError(f"{study.path}: {_where(study, out_dir)} holds results of a study named "
                        f"'{study.name}' with other settings ({differs}). {fix}")


def settings_difference(stored: dict | None, mine: dict, limit: int = 3) -> str:
    """'train epochs: 150 in the store, 3 here; …' for the first keys that differ."""
    if not isinstance(stored, dict):
        return "dataset, model, train, seeds, space, search or eval"
    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v
    a, b = dict(flat(stored)), dict(flat(mine))
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    shown = [f"{k.removeprefix('base.')}: {str(a.get(k))[:40]} in the store, {str(b.get(k))[:40]} here"
             for k in keys[:limit]]
    return "; ".join(shown) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def stale(attrs: dict, started: float | None, now: float | None = None) -> bool:
    """Whether a RUNNING trial's worker is gone: a process of this machine that no longer
    exists, or any worker whose last heartbeat is older than STALE_S."""
    now = time.time() if now is None else now
    worker = attrs.get("worker")
    if not worker:
        return True  # claimed without an owner: its process died between ask and record
    host, _, pid = worker.rpartition(":")
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            pass
    beat = attrs.get("heartbeat", started)
    return beat is not None and now - beat > STALE_S


class Heartbeat:
    """A daemon thread that stamps the trials this process holds every HEARTBEAT_S seconds,
    so workers on other machines can tell it is alive."""

    def __init__(self, store: optuna.Study, interval: float = HEARTBEAT_S):
        self.storage, self.interval = store._storage, interval
        self.trial_ids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ablate-heartbeat", daemon=True)
        self._thread.start()

    def beat(self, tid: int) -> None:
        self.storage.set_trial_user_attr(tid, "heartbeat", time.time())

    def hold(self, trial: optuna.Trial) -> None:
        """Stamp a newly claimed trial now, and every interval until it is released."""
        self.beat(trial_id(trial))
        self.trial_ids.add(trial_id(trial))

    def release(self, trials) -> None:
        self.trial_ids.difference_update(trial_id(t) for t in trials)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for tid in list(self.trial_ids):
                try:
                    self.beat(tid)
                except Exception:  # told meanwhile, or the database is busy: next beat
                    pass

    def stop(self) -> None:
        self._stop.set()


def tuning_name(study: Study, group: dict) -> str:
    """The Optuna study of one activation and cell's tuning search."""
    return f"{study.name}/tune/" + ",".join(f"{k}={encode_value(v)}" for k, v in group.items())


def best_tuned(study: Study, trials: list[FrozenTrial]) -> tuple[dict, FrozenTrial | None] | None:
    """A finished tuning search's best values of the tuned keys and its trial, by validation
    objective; (the study's own values, None) when no tuning trial completed; None while the
    search still has trials to run."""
    mine = [t for t in trials if counted(t)]
    if len(mine) < study.protocol.budget or not all(t.state.is_finished() for t in mine):
        return None
    complete = [t for t in mine if t.state == TrialState.COMPLETE]
    if not complete:
        return {k: getattr(study.base, k) for k in study.protocol.keys}, None
    pick = max if study.search.direction == "maximize" else min
    best = pick(complete, key=lambda t: t.value)
    return {k: v for k, v in decode_params(study, best.params).items()}, best
