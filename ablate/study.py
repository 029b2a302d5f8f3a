"""Study YAML → a validated, frozen `Study`. Every error names the file, the key and the fix.

Owns: the YAML schema (keys, types, defaults), the grid over `space`, per-member `RunConfig`s.
Does not own: loading data (data.py) or running anything (runner.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from ablate.activations import INIT_SCHEMES, get_activation
from ablate.data import COMMON_OPTIONS, DATASET_OPTIONS, DATASETS
from ablate.errors import UserError
from ablate.registry import suggest

METRICS = ("test_nelbo", "test_recon", "test_kl", "test_nll", "active_units", "mutual_info",
           "dead_units", "probe_accuracy", "train_seconds")
"""Per-member result columns of runs.csv that a report can rank by."""
MAXIMIZE = frozenset({"probe_accuracy", "active_units", "mutual_info"})
"""Metrics where higher is better; every other metric is minimised."""
PER_EPOCH = {"test_nll": "test_nelbo", "test_nelbo": "test_nelbo", "test_recon": "test_recon",
             "test_kl": "test_kl"}
"""Objective → the quantity measured after every epoch that a pruner compares (the negative
ELBO bounds the NLL from above, so it falls with it)."""
STRATEGIES = ("grid", "tpe", "random", "cmaes", "qmc")
PRUNERS = ("none", "median", "hyperband", "wilcoxon")
STORAGE_SCHEMES = ("sqlite", "postgresql")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one trained model except its seed. Field names are the column
    names of runs.csv and the keys a study's `space:` may vary."""

    activation: str = "relu"
    """Nonlinearity of every hidden layer (`ablate list activations`)."""
    latent_dim: int = 8
    """Number of latent dimensions."""
    kl_weight: float = 1.0
    """β: loss per image = recon + kl_weight · KL, in nats."""
    family: str = "vae"
    """vae (Gaussian encoder, reparameterised) or ae (deterministic autoencoder baseline)."""
    hidden: tuple[int, ...] = (256,)
    """Hidden widths of the encoder; the decoder mirrors them."""
    likelihood: str = "bernoulli"
    """bernoulli (pixels in [0,1] as probabilities) or gaussian (learned shared variance)."""
    epochs: int = 30
    """Passes over the training split."""
    batch_size: int = 128
    """Examples per gradient step."""
    lr: float = 1.0e-3
    """Adam learning rate."""
    kl_warmup_epochs: int = 0
    """Epochs over which the KL weight ramps linearly from 0 to kl_weight (0: no warm-up)."""
    init: str = "auto"
    """Hidden-layer weight init: auto (the one each activation needs) or default (PyTorch
    Linear), kaiming, xavier, lecun for every activation."""


# Which YAML section each RunConfig field lives in (space keys may be `field` or `section.field`).
SECTION_FIELDS = {
    "model": ("family", "hidden", "likelihood", "activation", "latent_dim", "init"),
    "train": ("epochs", "batch_size", "lr", "kl_weight", "kl_warmup_epochs"),
}
FIELD_SECTION = {f: s for s, fields in SECTION_FIELDS.items() for f in fields}


@dataclass(frozen=True)
class Range:
    """A searched interval of one numeric field: `{low: 2, high: 64, log: true}` in YAML."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Search:
    """How trials are chosen (`search:` in YAML): every grid point, or a sampler's proposals."""

    strategy: str = "grid"
    n_trials: int | None = None
    """Trials to run (complete + pruned + failed); None under grid (every point once)."""
    objective: str = "test_nll"
    """The runs.csv metric a trial's value is (mean over its seeds)."""
    direction: str = "minimize"
    pruner: str = "none"
    sampler_seed: int = 0
    cohort_trials: int | None = None
    """Trials asked at once and trained as one fleet; None: as many as fit (grid, random,
    qmc), or a few so a model-based sampler learns between cohorts (tpe, cmaes)."""

    @property
    def is_grid(self) -> bool:
        return self.strategy == "grid"


@dataclass(frozen=True)
class Study:
    """A validated study: the grid of configurations × seeds and how to evaluate them."""

    name: str
    description: str
    dataset: dict[str, Any]
    base: RunConfig
    space: dict[str, tuple]
    """Categorical axes: field → the values to try (a YAML list)."""
    seeds: tuple[int, ...]
    iwae_samples: int = 100
    device: str = "auto"
    cohort_size: int | None = None
    baseline: str = "relu"
    metric: str = "test_nll"
    ranges: dict[str, Range] = field(default_factory=dict)
    """Searched intervals: field → Range (only under a search strategy)."""
    search: Search = field(default_factory=Search)
    storage: str = "sqlite"
    """sqlite (results/<name>/study.db) or a database URL shared by several machines."""
    source: str = ""
    """The YAML text as written (shown in the report)."""
    path: str = ""
    resolved: dict = field(default_factory=dict)

    def points(self) -> list[dict[str, Any]]:
        """Every grid point: a dict of space key → value, in a stable order."""
        keys = list(self.space)
        return [dict(zip(keys, combo)) for combo in itertools.product(*self.space.values())]

    def corners(self) -> list[dict[str, Any]]:
        """The grid points with every range at its high end: the largest models a study can
        ask for (what sizes a cohort)."""
        high = {k: (int(r.high) if r.integer else r.high) for k, r in self.ranges.items()}
        return [{**p, **high} for p in self.points()]

    def activations(self) -> tuple[str, ...]:
        return self.space.get("activation", (self.base.activation,))

    def params(self, point: dict[str, Any]) -> dict[str, Any]:
        """A trial's parameters (space and range keys) → their RunConfig field values."""
        return {k: (int(v) if k in self.ranges and self.ranges[k].integer else v)
                for k, v in point.items()}

    def config(self, point: dict[str, Any]) -> RunConfig:
        return replace(self.base, **point)

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not name, report options or device)."""
        keyed = {"dataset": self.dataset, "base": asdict(self.base), "seeds": self.seeds,
                 "space": {k: list(v) for k, v in self.space.items()}, "iwae": self.iwae_samples}
        if not self.search.is_grid:  # n_trials, pruner and seed may change between runs
            keyed["search"] = {"strategy": self.search.strategy, "objective": self.search.objective,
                               "direction": self.search.direction,
                               "ranges": {k: asdict(r) for k, r in self.ranges.items()}}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=list).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Value checkers: each returns the normalised value or raises _Bad with a sentence.

class _Bad(Exception):
    pass


def _int(lo: int | None = None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(f"must be a whole number, got {v!r}")
        if lo is not None and v < lo:
            raise _Bad(f"must be at least {lo}, got {v}")
        return v
    return check


def _float(lo: float | None = None, positive: bool = False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Bad(f"must be a number, got {v!r}")
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")):
            raise _Bad(f"must be a finite number, got {v}")
        if positive and v <= 0:
            raise _Bad(f"must be greater than 0, got {v:g}")
        if lo is not None and v < lo:
            raise _Bad(f"must be at least {lo:g}, got {v:g}")
        return v
    return check


def _str(v):
    if not isinstance(v, str) or not v:
        raise _Bad(f"must be a non-empty string, got {v!r}")
    return v


def _bool(v):
    if not isinstance(v, bool):
        raise _Bad(f"must be true or false, got {v!r}")
    return v


def _choice(*options):
    def check(v):
        if v not in options:
            hint = suggest(str(v), list(options))
            raise _Bad(f"must be one of {', '.join(options)}, got {v!r}.{hint}".rstrip("."))
        return v
    return check


def _hidden(v):
    if not isinstance(v, list) or not v:
        raise _Bad(f"must be a non-empty list of layer widths such as [256], got {v!r}")
    return tuple(_int(1)(w) for w in v)


def _activation(v):
    name = _str(v)
    try:
        get_activation(name)
    except UserError as exc:
        raise _Bad(str(exc)) from None
    return name


FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "activation": _activation, "latent_dim": _int(1), "kl_weight": _float(lo=0.0),
    "family": _choice("vae", "ae"), "hidden": _hidden, "likelihood": _choice("bernoulli", "gaussian"),
    "epochs": _int(1), "batch_size": _int(1), "lr": _float(positive=True),
    "kl_warmup_epochs": _int(0), "init": _choice("auto", *INIT_SCHEMES),
}
TOP_KEYS = ("name", "description", "dataset", "model", "train", "eval", "seeds", "space",
            "search", "storage", "device", "cohort_size", "report")
SEARCH_KEYS = ("strategy", "n_trials", "objective", "direction", "pruner", "sampler_seed",
               "cohort_trials")
RANGE_FIELDS = {"latent_dim": True, "kl_weight": False, "epochs": True, "batch_size": True,
                "lr": False, "kl_warmup_epochs": True}
"""Fields a search may give as a range, and whether the range is of whole numbers."""
EVAL_CHECKS = {"iwae_samples": _int(1)}
REPORT_CHECKS = {"baseline": _str, "metric": _choice(*METRICS)}


def _device(v):
    v = _str(v)
    if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
        return v
    raise _Bad(f"must be auto, cpu, cuda or cuda:N, got {v!r}")


# ---------------------------------------------------------------------------------------------

class _Lines:
    """Line numbers of keys in the YAML document, for error messages."""

    def __init__(self, text: str):
        self.lines: dict[str, int] = {}
        try:
            self._walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
        except yaml.YAMLError:
            pass

    def _walk(self, node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                self.lines[path] = key.start_mark.line + 1
                self._walk(value, path)

    def at(self, path: str) -> str:
        while path and path not in self.lines:
            path = path.rpartition(".")[0]
        return f":{self.lines[path]}" if path in self.lines else ""


class _Loader:
    def __init__(self, path: str, text: str):
        self.path, self.where = path, _Lines(text)

    def fail(self, key: str, message: str) -> UserError:
        prefix = f"{key}: " if key else ""
        return UserError(f"{self.path}{self.where.at(key)}: {prefix}{message}")

    def check(self, key: str, value, checker):
        try:
            return checker(value)
        except _Bad as exc:
            return self._raise(key, str(exc))

    def _raise(self, key, message):
        raise self.fail(key, message)

    def mapping(self, key: str, value, allowed) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping of keys to values, got {type(value).__name__}")
        for k in value:
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                hint = suggest(str(k), list(allowed))
                known = ", ".join(allowed)
                raise self.fail(where, f"unknown key '{k}'.{hint} Allowed here: {known}.")
        return value


def load_study(path: str | Path) -> Study:
    """Read and validate a study YAML file; raise UserError naming file, key and fix."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such study file. Give the path to a study YAML "
                        "(see studies/quick.yaml).") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it as a study YAML ({exc}).") from None
    return parse_study(text, path)


def parse_study(text: str, path: str = "<study>") -> Study:
    ld = _Loader(path, text)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{path}{line}: malformed YAML ({problem}); fix the syntax there.") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a study must be a YAML mapping with keys such as dataset, "
                        f"model, train, space; got {type(doc).__name__}.")
    ld.mapping("", doc, TOP_KEYS)

    name = ld.check("name", doc.get("name", Path(path).stem), _str)
    if "/" in name or name.startswith("."):
        raise ld.fail("name", f"'{name}' names a results folder; use letters, digits, - and _.")
    description = ld.check("description", doc.get("description", ""), lambda v: str(v))

    # dataset
    ds = doc.get("dataset", {"name": "digits"})
    if isinstance(ds, str):
        ds = {"name": ds}
    if not isinstance(ds, dict) or "name" not in ds:
        raise ld.fail("dataset", "must be a mapping with a name, e.g. {name: digits}")
    ds_name = ld.check("dataset.name", ds["name"], _str)
    if ds_name not in DATASETS:
        hint = suggest(ds_name, DATASETS.names())
        raise ld.fail("dataset.name", f"unknown dataset '{ds_name}'.{hint} "
                                      f"Known: {', '.join(DATASETS.names())}.")
    options = {**DATASET_OPTIONS[ds_name], **COMMON_OPTIONS}
    ld.mapping("dataset", ds, ("name", *options))
    kinds = {int: _int(1), float: _float(positive=True), str: _str, bool: _bool}
    dataset = {"name": ds_name}
    for k, v in ds.items():
        if k != "name":
            dataset[k] = ld.check(f"dataset.{k}", v, kinds[options[k]])

    # model and train sections: defaults for every RunConfig field
    base = {}
    for section, fields in SECTION_FIELDS.items():
        for k, v in ld.mapping(section, doc.get(section), fields).items():
            base[k] = ld.check(f"{section}.{k}", v, FIELD_CHECKS[k])

    ev = ld.mapping("eval", doc.get("eval"), tuple(EVAL_CHECKS))
    iwae = ld.check("eval.iwae_samples", ev.get("iwae_samples", 100), EVAL_CHECKS["iwae_samples"])

    seeds = doc.get("seeds", 3)
    if isinstance(seeds, list):
        if not seeds:
            raise ld.fail("seeds", "is an empty list; give a count such as 3 or a list of seeds")
        seeds = tuple(ld.check("seeds", s, _int(0)) for s in seeds)
        if len(set(seeds)) != len(seeds):
            raise ld.fail("seeds", "lists a seed twice; seeds are repeats and must be distinct")
    else:
        seeds = tuple(range(ld.check("seeds", seeds, _int(1))))

    # search: how trials are chosen (read first: it decides what space may hold)
    sr = ld.mapping("search", doc.get("search"), SEARCH_KEYS)
    strategy = ld.check("search.strategy", sr.get("strategy", "grid"), _choice(*STRATEGIES))
    grid = strategy == "grid"

    # space: a list is crossed (grid) or categorical (search); a mapping is a searched range
    space: dict[str, tuple] = {}
    ranges: dict[str, Range] = {}
    raw_space = doc.get("space") or {}
    allowed = (*FIELD_SECTION, *(f"{s}.{f}" for f, s in FIELD_SECTION.items()))
    ld.mapping("space", raw_space, allowed)
    for key, values in raw_space.items():
        fld = key.rpartition(".")[2]
        where = f"space.{key}"
        if "." in key and FIELD_SECTION[fld] != key.partition(".")[0]:
            raise ld.fail(where, f"'{fld}' belongs to {FIELD_SECTION[fld]}, not "
                                 f"{key.partition('.')[0]}; write space.{fld}.")
        if fld in space or fld in ranges:
            raise ld.fail(where, f"'{fld}' is given twice in space")
        if isinstance(values, dict):
            ranges[fld] = _range(ld, where, fld, values, strategy)
            continue
        if not isinstance(values, list):
            raise ld.fail(where, f"must be a list of values to try, e.g. [{values!r}]"
                          + ("" if grid or fld not in RANGE_FIELDS
                             else ", or a range such as {low: 1, high: 10, log: true}"))
        if not values:
            raise ld.fail(where, "is an empty list; give at least one value (or remove the key)")
        checked = tuple(ld.check(where, v, FIELD_CHECKS[fld]) for v in values)
        if len(set(checked)) != len(checked):
            raise ld.fail(where, "lists a value twice")
        space[fld] = checked

    device = ld.check("device", doc.get("device", "auto"), _device)
    cohort = doc.get("cohort_size", "auto")
    cohort_size = None if cohort == "auto" else ld.check("cohort_size", cohort, _int(1))

    rep = ld.mapping("report", doc.get("report"), tuple(REPORT_CHECKS))
    activations = space.get("activation", (base.get("activation", "relu"),))
    baseline = ld.check("report.baseline", rep.get("baseline", "relu"), _str)
    if baseline not in activations:
        if "baseline" in rep:
            raise ld.fail("report.baseline", f"'{baseline}' is not among the study's activations "
                                             f"({', '.join(activations)}); pick one of them.")
        baseline = activations[0]
    family = set(space.get("family", (base.get("family", "vae"),)))
    default_metric = "test_nll" if "vae" in family else "test_recon"
    metric = ld.check("report.metric", rep["metric"], REPORT_CHECKS["metric"]) if "metric" in rep else None
    objective = ld.check("search.objective", sr.get("objective", metric or default_metric),
                         _choice(*METRICS))
    metric = metric or objective
    search = _search(ld, sr, strategy, objective)
    storage = ld.check("storage", doc.get("storage", "sqlite"), check_storage)

    return Study(name=name, description=description, dataset=dataset, base=RunConfig(**base),
                 space=space, seeds=seeds, iwae_samples=iwae, device=device,
                 cohort_size=cohort_size, baseline=baseline, metric=metric, ranges=ranges,
                 search=search, storage=storage, source=text, path=path)


def _range(ld: _Loader, where: str, fld: str, spec: dict, strategy: str) -> Range:
    """`{low, high, log}` → Range; only numeric fields, only under a search strategy."""
    if strategy == "grid":
        raise ld.fail(where, "is a range, which a grid cannot enumerate; give a list of values, "
                             "or set search.strategy to tpe, random, cmaes or qmc.")
    if fld not in RANGE_FIELDS:
        raise ld.fail(where, f"'{fld}' is categorical; give a list of values to choose from.")
    ld.mapping(where, spec, ("low", "high", "log"))
    for k in ("low", "high"):
        if k not in spec:
            raise ld.fail(where, f"a range needs low and high, e.g. {{low: 1, high: 10}}; {k} is missing.")
    integer = RANGE_FIELDS[fld]
    check = FIELD_CHECKS[fld]
    low = ld.check(f"{where}.low", spec["low"], check)
    high = ld.check(f"{where}.high", spec["high"], check)
    log = ld.check(f"{where}.log", spec.get("log", False), _bool)
    if not low < high:
        raise ld.fail(where, f"low ({low}) must be less than high ({high}); for one value write [{low}].")
    if log and low <= 0:
        raise ld.fail(f"{where}.log", f"a log range needs low > 0, got low = {low}.")
    return Range(float(low), float(high), log, integer)


def _search(ld: _Loader, sr: dict, strategy: str, objective: str) -> Search:
    grid = strategy == "grid"
    if grid and "n_trials" in sr:
        raise ld.fail("search.n_trials", "is not used by strategy grid, which trains every grid "
                                         "point once; remove it or pick tpe, random, cmaes or qmc.")
    if not grid and "n_trials" not in sr:
        raise ld.fail("search", f"strategy {strategy} needs n_trials, the number of trials to "
                                "run (complete, pruned and failed), e.g. n_trials: 60.")
    n_trials = ld.check("search.n_trials", sr["n_trials"], _int(1)) if not grid else None
    inferred = "maximize" if objective in MAXIMIZE else "minimize"
    direction = ld.check("search.direction", sr.get("direction", inferred), _choice("minimize", "maximize"))
    pruner = ld.check("search.pruner", sr.get("pruner", "none"), _choice(*PRUNERS))
    if pruner != "none" and objective not in PER_EPOCH:
        raise ld.fail("search.pruner", f"pruning needs an objective measured after every epoch "
                                       f"({', '.join(PER_EPOCH)}); {objective} is measured only at "
                                       "the end. Use pruner: none or one of those objectives.")
    seed = ld.check("search.sampler_seed", sr.get("sampler_seed", 0), _int(0))
    k = sr.get("cohort_trials", "auto")
    cohort_trials = None if k == "auto" else ld.check("search.cohort_trials", k, _int(1))
    return Search(strategy, n_trials, objective, direction, pruner, seed, cohort_trials)


def redact(url: str) -> str:
    """A storage URL fit to print: any password (user:password@ or ?password=) becomes ***."""
    url = re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", url)


def storage_option(url: str) -> str:
    """A `--storage` command-line value, checked like the YAML key."""
    try:
        return check_storage(url)
    except _Bad as exc:
        raise UserError(f"--storage: {exc}") from None


def check_storage(v) -> str:
    """`sqlite` (the results folder's study.db) or a database URL (sqlite:///…, postgresql://…)."""
    if not isinstance(v, str) or not v:
        raise _Bad(f"must be sqlite or a database URL such as postgresql://user@host:5432/db, got {v!r}")
    if v == "sqlite":
        return v
    scheme, sep, rest = v.partition("://")
    dialect = scheme.partition("+")[0]
    if not sep or not rest:
        raise _Bad(f"'{redact(v)}' is not a database URL; use sqlite or a URL such as "
                   "postgresql://user@host:5432/db")
    if dialect not in STORAGE_SCHEMES:
        raise _Bad(f"'{dialect}' databases are not supported; use sqlite or postgresql://user@host:5432/db")
    return v
