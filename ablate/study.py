"""Study YAML → a validated, frozen `Study`. Every error names the file, the key and the fix.

Owns: the YAML schema (keys, types, defaults), the grid over `space`, per-member `RunConfig`s.
Does not own: loading data (data.py) or running anything (runner.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
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
class Study:
    """A validated study: the grid of configurations × seeds and how to evaluate them."""

    name: str
    description: str
    dataset: dict[str, Any]
    base: RunConfig
    space: dict[str, tuple]
    seeds: tuple[int, ...]
    iwae_samples: int = 100
    device: str = "auto"
    cohort_size: int | None = None
    baseline: str = "relu"
    metric: str = "test_nll"
    source: str = ""
    """The YAML text as written (shown in the report)."""
    path: str = ""
    resolved: dict = field(default_factory=dict)

    def points(self) -> list[dict[str, Any]]:
        """Every grid point: a dict of space key → value, in a stable order."""
        keys = list(self.space)
        return [dict(zip(keys, combo)) for combo in itertools.product(*self.space.values())]

    def config(self, point: dict[str, Any]) -> RunConfig:
        return replace(self.base, **point)

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not name, report options or device)."""
        keyed = {"dataset": self.dataset, "base": asdict(self.base), "seeds": self.seeds,
                 "space": {k: list(v) for k, v in self.space.items()}, "iwae": self.iwae_samples}
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
            "device", "cohort_size", "report")
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

    # space: every value list is crossed
    space: dict[str, tuple] = {}
    raw_space = doc.get("space") or {}
    allowed = (*FIELD_SECTION, *(f"{s}.{f}" for f, s in FIELD_SECTION.items()))
    ld.mapping("space", raw_space, allowed)
    for key, values in raw_space.items():
        fld = key.rpartition(".")[2]
        where = f"space.{key}"
        if "." in key and FIELD_SECTION[fld] != key.partition(".")[0]:
            raise ld.fail(where, f"'{fld}' belongs to {FIELD_SECTION[fld]}, not "
                                 f"{key.partition('.')[0]}; write space.{fld}.")
        if fld in space:
            raise ld.fail(where, f"'{fld}' is given twice in space")
        if not isinstance(values, list):
            raise ld.fail(where, f"must be a list of values to try, e.g. [{values!r}]")
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
    metric = rep.get("metric", "test_nll" if "vae" in family else "test_recon")
    metric = ld.check("report.metric", metric, REPORT_CHECKS["metric"])

    return Study(name=name, description=description, dataset=dataset, base=RunConfig(**base),
                 space=space, seeds=seeds, iwae_samples=iwae, device=device,
                 cohort_size=cohort_size, baseline=baseline, metric=metric, source=text, path=path)
