"""Study YAML → a validated, frozen `Study`. Every error names the file, the key and the fix.

Owns: the YAML schema — each field's type, section, check, whether `space:` may vary it (as a
list, or as a range under a search) and its default, written once as dataclass field metadata
(`setting`) and read by one generic loader — the cross-field rules, the grid over `space`,
per-member `RunConfig`s. Torch-free.
Does not own: loading data (data.py), metric definitions (metrics.py), or running anything
(runner.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from ablate.activations import INIT_SCHEMES, check_activation
from ablate.data import COMMON_OPTIONS, DATASET_OPTIONS, DATASETS, VAL_FRACTION
from ablate.errors import UserError
from ablate.families import FAMILIES, FAMILY, default_metric, owners
from ablate.streams import TUNING_SEED
from ablate.metrics import FINAL, METRICS, PRUNABLE, twin_on_test, val_name
from ablate.registry import suggest

STRATEGIES = ("grid", "tpe", "random", "cmaes", "qmc")
PRUNERS = ("none", "median", "hyperband", "wilcoxon")
STORAGE_SCHEMES = ("sqlite", "postgresql")

# Bounds known when a study is read: beyond them a study cannot finish or cannot fit, and is
# refused before anything is written (what fits the device's memory is checked once the data
# is loaded: runner.check_fits).
MAX_SEEDS = 10_000
SEED_MAX = 2**63 - 1
"""Seeds are mixed with other numbers as 64-bit integers: two seeds that differ by 2⁶⁴ would
be the same run, so a seed must fit in 63 bits."""
MAX_EPOCHS = 100_000
MAX_WIDTH = 65_536
"""A hidden layer's width, a conv layer's channels, a latent size."""
MAX_IWAE = 100_000
MAX_MEMBERS = 1_000_000
"""Members (configurations × seeds) in one study."""
MAX_NAME_BYTES = 200
MAX_YAML_NODES = 100_000
"""Values a study's YAML may expand to once its aliases are followed ("billion laughs")."""


# ---------------------------------------------------------------------------------------------
# Value checkers: each returns the normalised value or raises _Bad with a sentence.

class _Bad(Exception):
    pass


def _shown(v, limit: int = 60) -> str:
    """A value as a message quotes it: its repr, cut to its first characters."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _not_a_number(v) -> str:
    """'got …', and for text YAML 1.1 would not read as a number (1e-4), how to write it."""
    if isinstance(v, str) and NUMBER.fullmatch(v.strip()):
        mantissa, _, exponent = v.strip().lower().partition("e")
        fixed = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
        return (f"got the text {_shown(v)}: YAML 1.1 reads a number with an exponent but no "
                f"decimal point as text; write {fixed}")
    return f"got {_shown(v)}"


def _int(lo: int | None = None, hi: int | None = None, why: str = ""):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(f"must be a whole number, {_not_a_number(v)}")
        if lo is not None and v < lo:
            raise _Bad(f"must be at least {lo}, got {_shown(v)}")
        if hi is not None and v > hi:
            raise _Bad(f"must be at most {hi:,}{why}, got {_shown(v)}")
        return v
    return check


def _float(lo: float | None = None, positive: bool = False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Bad(f"must be a number, {_not_a_number(v)}")
        try:
            v = float(v)
        except OverflowError:
            raise _Bad(f"is too large to be a number, got {_shown(v)}") from None
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
        raise _Bad(f"must be a non-empty string, got {_shown(v)}")
    return v


def _text(v):
    """Free text (a description): a string, possibly empty."""
    if not isinstance(v, str):
        raise _Bad(f"must be text, got {type(v).__name__} {_shown(v)}")
    return v


def _bool(v):
    if not isinstance(v, bool):
        raise _Bad(f"must be true or false, got {_shown(v)}")
    return v


def _choice(*options):
    def check(v):
        if v not in options:
            hint = suggest(str(v), list(options))
            raise _Bad(f"must be one of {', '.join(options)}, got {_shown(v)}.{hint}".rstrip("."))
        return v
    return check


ARCHS = ("mlp", "conv")


def _hidden(v):
    if not isinstance(v, list):
        raise _Bad(f"must be a list of layer widths such as [256] ([] for none: arch conv), got {_shown(v)}")
    return tuple(_int(1, MAX_WIDTH)(w) for w in v)


def _channels(v):
    if not isinstance(v, list) or not v:
        raise _Bad(f"must be a non-empty list of channel counts such as [32, 64], got {_shown(v)}")
    return tuple(_int(1, MAX_WIDTH)(c) for c in v)


def _device(v):
    v = _str(v)
    if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
        return v
    raise _Bad(f"must be auto, cpu, cuda or cuda:N, got {_shown(v)}")



def _activation(v):
    name = _str(v)
    try:
        check_activation(name)
    except UserError as exc:
        raise _Bad(str(exc)) from None
    return name


def _auto(check):
    """`auto` (None: chosen at run time) or a value `check` accepts."""
    return lambda v: None if v == "auto" else check(v)


def _fraction(v):
    """A share in [0, 1)."""
    v = _float(lo=0.0)(v)
    if v >= 1.0:
        raise _Bad(f"must be a fraction in [0, 1), got {v:g}")
    return v


def _shape(v):
    """An image shape [C, H, W]."""
    if not isinstance(v, list) or len(v) != 3:
        raise _Bad(f"must be an image shape [C, H, W] such as [3, 32, 32], got {v!r}")
    return tuple(_int(1)(d) for d in v)


def _seeds(v):
    """A count (3 → seeds 0, 1, 2) or an explicit list of distinct seeds."""
    if not isinstance(v, list):
        return tuple(range(_int(1, MAX_SEEDS, " (each seed is a whole training run)")(v)))
    if not v:
        raise _Bad("is an empty list; give a count such as 3 or a list of seeds")
    if len(v) > MAX_SEEDS:
        raise _Bad(f"lists {len(v):,} seeds; at most {MAX_SEEDS:,} (each is a whole training run)")
    seeds = tuple(_int(0, SEED_MAX, " (seeds are mixed as 63-bit numbers)")(s) for s in v)
    if len(set(seeds)) != len(seeds):
        raise _Bad("lists a seed twice; seeds are repeats and must be distinct")
    return seeds


def _name(v):
    v = _str(v)
    if "/" in v or "\\" in v or v.startswith(".") or any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise _Bad(f"{_shown(v)} names a results folder; use letters, digits, - and _.")
    if len(v.encode()) > MAX_NAME_BYTES:
        raise _Bad(f"is {len(v.encode())} bytes long; a results folder's name may have at most "
                   f"{MAX_NAME_BYTES}")
    return v


# ---------------------------------------------------------------------------------------------
# The schema: one `setting` per YAML field.

def setting(default, check: Callable[[Any], Any], section: str | None = None,
            axis: bool = False, range: type | None = None) -> Any:
    """A YAML field: its default, its check (returns the normalised value or raises _Bad), the
    YAML section it is written in (None: top level), whether `space:` may vary it, and for a
    numeric axis the type (int or float) of a searched range. Which families a model setting
    changes, each family says (families.Family.own)."""
    return field(default=default, metadata={"check": check, "section": section, "axis": axis,
                                            "range": range})


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one trained model except its seed. Field names are the column
    names of runs.csv and the keys a study's `space:` may vary."""

    activation: str = setting("relu", _activation, "model", axis=True)
    """Nonlinearity of every hidden layer (`ablate list activations`); of the encoder's when
    decoder_activation is given."""
    decoder_activation: str | None = setting(None, _activation, "model", axis=True)
    """The decoder's hidden layers' nonlinearity; None: the same as activation."""
    latent_dim: int = setting(8, _int(1, MAX_WIDTH), "model", axis=True, range=int)
    """Number of latent dimensions."""
    kl_weight: float = setting(1.0, _float(lo=0.0), "train", axis=True, range=float)
    """β: loss per image = recon + kl_weight · KL, in nats."""
    family: str = setting("vae", _choice(*FAMILIES), "model", axis=True)
    """vae (Gaussian encoder, reparameterised), or a deterministic autoencoder: ae (plain), dae
    (denoising), sae (sparse), cae (contractive)."""
    noise: float = setting(0.3, _fraction, "model", axis=True, range=float)
    """dae: each training input pixel is zeroed with this probability (masking noise)."""
    sparsity: float = setting(1.0e-3, _float(lo=0.0), "model", axis=True, range=float)
    """sae: λ of the penalty λ·Σ|z| per image on the code."""
    contraction: float = setting(1.0e-3, _float(lo=0.0), "model", axis=True, range=float)
    """cae: λ of the penalty λ·‖∂z/∂x‖²_F per image (Rifai et al. 2011)."""
    dropout: float = setting(0.0, _fraction, "model", axis=True, range=float)
    """Dropout probability after each hidden activation, in training only."""
    arch: str = setting("mlp", _choice(*ARCHS), "model", axis=True)
    """mlp (fully connected) or conv (convolutions before the fully connected layers)."""
    channels: tuple[int, ...] = setting((32, 64), _channels, "model", axis=True)
    """arch conv: output channels of each 4×4 stride-2 convolution (each halves H and W); the
    decoder mirrors them with transposed convolutions. Not used by arch mlp."""
    hidden: tuple[int, ...] = setting((256,), _hidden, "model", axis=True)
    """Hidden widths of the fully connected encoder (after the convolutions for arch conv,
    where it may be []); the decoder mirrors them."""
    likelihood: str = setting("bernoulli", _choice("bernoulli", "gaussian"), "model", axis=True)
    """bernoulli (pixels in [0,1] as probabilities) or gaussian (learned shared variance)."""
    epochs: int = setting(30, _int(1, MAX_EPOCHS, " (a study that long cannot finish)"), "train", axis=True,
                          range=int)
    """Passes over the training split."""
    batch_size: int = setting(128, _int(1), "train", axis=True, range=int)
    """Examples per gradient step."""
    lr: float = setting(1.0e-3, _float(positive=True), "train", axis=True, range=float)
    """Adam learning rate."""
    kl_warmup_epochs: int = setting(0, _int(0), "train", axis=True, range=int)
    """Epochs over which the KL weight ramps linearly from 0 to kl_weight (0: no warm-up)."""
    init: str = setting("auto", _choice("auto", *INIT_SCHEMES), "model", axis=True)
    """Hidden-layer weight init: auto (the one each activation needs) or default (PyTorch
    Linear), kaiming, xavier, lecun for every activation."""

    @property
    def decoder(self) -> str:
        """The decoder's activation."""
        return self.decoder_activation or self.activation

    def applies(self, key: str) -> bool:
        """Whether field `key` changes this configuration's model (kl_weight: only a vae's)."""
        return FAMILY[self.family].reads(key)

    @property
    def cohort_key(self) -> tuple:
        """Members with equal keys can share a fleet (same family, likelihood, architecture —
        for conv the same channels —, depth, schedule)."""
        channels = self.channels if self.arch == "conv" else ()
        return (self.family, self.likelihood, self.arch, channels, len(self.hidden),
                self.batch_size, self.epochs)


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

    strategy: str = setting("grid", _choice(*STRATEGIES), "search")
    n_trials: int | None = setting(None, _int(1), "search")
    """Trials to run (complete + pruned + failed); None under grid (every point once)."""
    objective: str = setting("val_nll", _choice(*FINAL), "search")
    """The runs.csv metric a trial's value is (mean over its seeds): a validation metric, never
    a test one; when not given, the validation twin of the study's report.metric."""
    direction: str = setting("minimize", _choice("minimize", "maximize"), "search")
    """When not given, the objective's direction in the metric table."""
    pruner: str = setting("none", _choice(*PRUNERS), "search")
    sampler_seed: int = setting(0, _int(0), "search")
    cohort_trials: int | None = setting(None, _auto(_int(1)), "search")
    """Trials asked at once and trained as one fleet; None (auto): as many as fit (grid,
    random, qmc), or a few so a model-based sampler learns between cohorts (tpe, cmaes)."""

    @property
    def is_grid(self) -> bool:
        return self.strategy == "grid"


ARMS = ("fixed", "tuned")
"""The tuned protocol's final arms: the study's own values, and each activation's tuned ones."""


@dataclass(frozen=True)
class Protocol:
    """The tuned protocol (`protocol:` in YAML): for each activation and cell, a TPE search over
    the nuisance hyperparameters in `tune` on validation, `budget` trials of one seed each; then
    the fixed and the tuned arm trained with the final seeds (the study's `seeds`)."""

    space: dict[str, tuple] = field(default_factory=dict)
    """Tuned categorical keys (`tune:` lists) → their choices."""
    ranges: dict[str, Range] = field(default_factory=dict)
    """Tuned intervals (`tune:` mappings)."""
    budget: int = setting(8, _int(1), "protocol")
    """Tuning trials per activation and cell."""

    @property
    def keys(self) -> list[str]:
        return [*self.space, *self.ranges]


@dataclass(frozen=True)
class Study:
    """A validated study: the grid of configurations × seeds and how to evaluate them."""

    name: str = setting("", _name)
    """Results go to results/<name>/; when not given, the file's stem."""
    description: str = setting("", _text)
    dataset: dict[str, Any] = field(default_factory=lambda: {"name": "digits"})
    """The dataset and its options (checked against data.DATASET_OPTIONS)."""
    base: RunConfig = field(default_factory=RunConfig)
    """The `model:` and `train:` sections: every member's values outside `space`."""
    iwae_samples: int = setting(100, _int(1, MAX_IWAE), "eval")
    seeds: tuple[int, ...] = setting((0, 1, 2), _seeds)
    """Repeats of every configuration, never a search axis."""
    space: dict[str, tuple] = field(default_factory=dict)
    """Categorical axes: field → the values to try (a YAML list)."""
    ranges: dict[str, Range] = field(default_factory=dict)
    """Searched intervals: field → Range (only under a search strategy)."""
    search: Search = field(default_factory=Search)
    protocol: Protocol | None = None
    """The tuned protocol, when the study asks for it (its grid points are then the cells in
    which each activation is tuned, and every point is trained in both arms)."""
    storage: str = setting("sqlite", lambda v: check_storage(v))
    """sqlite (results/<name>/study.db) or a database URL shared by several machines."""
    device: str = setting("auto", _device)
    checkpoint_minutes: float = setting(5.0, _float(0))
    """A training cohort's state is saved at an epoch end at most this often (0: never), so a
    killed run resumes it from there."""
    cohort_size: int | None = setting(None, _auto(_int(1)))
    """Members trained together; None (auto): what fits in half the free memory."""
    baseline: str = setting("relu", _str, "report")
    """The activation the paired tests compare against; when not given and the study lacks
    relu, its first activation."""
    metric: str = setting("test_nll", _choice(*FINAL), "report")
    """What the report ranks by; when not given, the test twin of search.objective if that is
    given, else test_nll for studies with a VAE and test_recon otherwise."""
    rope: float | None = setting(None, _auto(_float(0.0)), "report")
    """The region of practical equivalence of report.metric, in its unit: differences within
    ±rope count as equivalent in the Bayesian signed-rank test; auto (None): the metric
    table's default (metrics.Metric.rope)."""
    source: str = ""
    """The YAML text as written (shown in the report), or as `overrides` made it."""
    path: str = ""
    overrides: tuple[str, ...] = ()
    """The `--set KEY=VALUE` given on the command line, in order."""
    tracking: dict[str, dict[str, str]] = field(default_factory=dict)
    """`tracking:` — mlflow: {uri, experiment} and/or tensorboard: {dir} (tracking.py); not
    part of the fingerprint: it changes where numbers are logged, not the numbers."""

    def points(self) -> list[dict[str, Any]]:
        """Every grid point: a dict of space key → value, in a stable order. An axis that does
        not apply to a point's family (kl_weight for an ae) is left out of it, so it does not
        multiply that family's members."""
        keys, out, seen = list(self.space), [], set()
        for combo in itertools.product(*self.space.values()):
            point = dict(zip(keys, combo))
            config = self.config(point)
            point = {k: v for k, v in point.items() if config.applies(k)}
            if (ident := repr(point)) not in seen:
                seen.add(ident)
                out.append(point)
        return out

    def corners(self) -> list[dict[str, Any]]:
        """The grid points with every range (searched or tuned) at its high end: the largest
        models a study can ask for (what sizes a cohort)."""
        ranges = {**self.ranges, **(self.protocol.ranges if self.protocol else {})}
        high = {k: (int(r.high) if r.integer else r.high) for k, r in ranges.items()}
        return [{**p, **high} for p in self.points()]

    def activations(self) -> tuple[str, ...]:
        return self.space.get("activation", (self.base.activation,))

    def params(self, point: dict[str, Any]) -> dict[str, Any]:
        """A trial's parameters (space, range and tuned keys) → their RunConfig field values,
        without those that do not apply to its family (a sampler may have drawn kl_weight for
        an ae; it changes nothing and is not part of the point)."""
        ranges = {**self.ranges, **(self.protocol.ranges if self.protocol else {})}
        values = {k: (int(v) if k in ranges and ranges[k].integer else v) for k, v in point.items()}
        config = self.config({k: v for k, v in values.items() if k in RunConfig.__dataclass_fields__})
        return {k: v for k, v in values.items()
                if k not in RunConfig.__dataclass_fields__ or config.applies(k)}

    def config(self, point: dict[str, Any]) -> RunConfig:
        return replace(self.base, **point)

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not name, report options or device)."""
        return hashlib.sha256(json.dumps(self.settings_record(), sort_keys=True, default=list)
                              .encode()).hexdigest()[:16]

    def settings_record(self) -> dict:
        """Everything that changes results, as plain data: what the fingerprint hashes, and
        what the store keeps so that a mismatch can be named key by key."""
        keyed = {"dataset": self.dataset, "base": asdict(self.base), "seeds": self.seeds,
                 "space": {k: list(v) for k, v in self.space.items()}, "iwae": self.iwae_samples}
        keyed["val_fraction"] = self.dataset.get("val_fraction", VAL_FRACTION)
        if not self.search.is_grid:  # n_trials, pruner and seed may change between runs
            keyed["search"] = {"strategy": self.search.strategy, "objective": self.search.objective,
                               "direction": self.search.direction,
                               "ranges": {k: asdict(r) for k, r in self.ranges.items()}}
        if self.protocol:
            keyed["protocol"] = {"tune": {k: list(v) for k, v in self.protocol.space.items()},
                                 "ranges": {k: asdict(r) for k, r in self.protocol.ranges.items()},
                                 "budget": self.protocol.budget, "objective": self.search.objective}
        return json.loads(json.dumps(keyed, sort_keys=True, default=list))


def settings(cls, section: str | None = ...) -> list[Field]:
    """The YAML fields of a dataclass (all of them, or those of one section)."""
    return [f for f in fields(cls) if "check" in f.metadata
            and (section is ... or f.metadata["section"] == section)]


def default(cls, name: str):
    """A field's declared default."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if callable(f.default_factory) else f.default


AXES: dict[str, Field] = {f.name: f for f in settings(RunConfig) if f.metadata["axis"]}
"""RunConfig fields a study's `space:` may vary."""
SECTIONS = tuple(dict.fromkeys(f.metadata["section"] for f in settings(RunConfig)))
"""The YAML sections RunConfig fields are written in (model, train)."""
TOP_KEYS = tuple(dict.fromkeys([*(f.metadata["section"] or f.name for f in settings(Study)),
                                "dataset", *SECTIONS, "space", "search", "protocol", "tracking"]))
"""Every key a study may have at its top level."""


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
    def __init__(self, path: str, text: str, overrides: dict[str, str] | None = None):
        self.path, self.where = path, _Lines(text)
        self.overrides = overrides or {}
        """key → the `--set KEY=VALUE` that gave it: an error in it names the override."""

    def fail(self, key: str, message: str) -> UserError:
        prefix = f"{key}: " if key else ""
        given = next((item for k, item in self.overrides.items()
                      if key == k or key.startswith(k + ".") or (key and k.startswith(key + "."))), None)
        if given is not None:
            return UserError(f"{self.path}: --set {given}: {prefix}{message}")
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
            if not isinstance(k, str):
                where = f"{key}.{_shown(k)}" if key else _shown(k)
                raise self.fail(key, f"has the key {_shown(k)}, which is not text; keys are names "
                                     f"such as {', '.join(list(allowed)[:3])}.")
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                hint = suggest(str(k), list(allowed))
                known = ", ".join(allowed)
                raise self.fail(where, f"unknown key '{k}'.{hint} Allowed here: {known}.")
        return value


def load_study(path: str | Path, overrides: tuple[str, ...] = ()) -> Study:
    """Read and validate a study YAML file, with `overrides` (`KEY=VALUE`, as `--set` gives
    them) applied first; raise UserError naming the file (or the override), key and fix."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such study file. Give the path to a study YAML "
                        "(see studies/quick.yaml).") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it as a study YAML ({exc}).") from None
    return parse_study(text, path, overrides)


def parse_study(text: str, path: str = "<study>", overrides: tuple[str, ...] = ()) -> Study:
    """Validate a study's YAML text with `overrides` applied; `path` names it in error
    messages. With overrides, the study's `source` is the YAML they make (what results/<name>/
    study.yaml keeps, so a report rebuilt from it sees the same study)."""
    ld, doc = _document(text, path)
    if overrides:
        doc = override(doc, overrides, path)
        ld.overrides = {item.partition("=")[0].strip(): item for item in overrides}
        shown = (o.encode("unicode_escape").decode() for o in overrides)  # one comment line
        text = (f"# {Path(path).name} with " + " ".join(f"--set '{o}'" for o in shown) + "\n"
                + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100))
    ld.mapping("", doc, TOP_KEYS)
    top = _read(ld, Study, doc)
    if "name" not in top:
        top["name"] = ld.check("name", Path(path).stem, _name)
    top["dataset"] = _dataset(ld, doc.get("dataset", default(Study, "dataset")))
    base = _read(ld, RunConfig, doc)
    search = _read(ld, Search, doc)
    strategy = search.get("strategy", default(Search, "strategy"))
    space, ranges = _space(ld, doc.get("space") or {}, strategy)
    protocol = _protocol(ld, doc, top, space, strategy) if doc.get("protocol") is not None else None
    top["tracking"] = _tracking(ld, doc.get("tracking"))

    # Cross-field rules: defaults that follow from other fields.
    activations = space.get("activation", (base.get("activation", default(RunConfig, "activation")),))
    top["baseline"] = _baseline(ld, top.get("baseline"), activations)
    families = set(space.get("family", (base.get("family", default(RunConfig, "family")),)))
    search = _search(ld, doc.get("search") or {}, search, top.get("metric"),
                     default_metric(families), top["dataset"])
    top["metric"] = top.get("metric", twin_on_test(search.objective))
    _needs_validation(ld, top["dataset"], search, protocol)
    _architecture(ld, base, space)
    _families_apply(ld, families, space, ranges, top["metric"], search)
    _bounded(ld, space, top.get("seeds", default(Study, "seeds")), search, protocol)
    return Study(**top, base=RunConfig(**base), space=space, ranges=ranges, search=search,
                 protocol=protocol, source=text, path=path, overrides=tuple(overrides))


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _override_value(raw: str):
    """A `--set` value read as YAML, with numbers like 1e-3 (a string to YAML 1.1) as floats."""
    def numbers(v):
        if isinstance(v, str) and NUMBER.fullmatch(v.strip()):
            return float(v)
        if isinstance(v, list):
            return [numbers(x) for x in v]
        if isinstance(v, dict):
            return {k: numbers(x) for k, x in v.items()}
        return v
    try:
        return numbers(yaml.safe_load(raw))
    except yaml.YAMLError as exc:
        raise _Bad(f"the value is not YAML ({getattr(exc, 'problem', None) or exc})") from None


def override(doc: dict, overrides: tuple[str, ...], path: str) -> dict:
    """The YAML mapping with each `KEY=VALUE` set: KEY a dotted path (train.epochs,
    space.activation, dataset.train_size), VALUE YAML ([relu, gelu], 5, 1e-3). The result is
    validated like any study; this only places the values."""
    import copy

    doc = copy.deepcopy(doc)
    for item in overrides:
        key, eq, raw = item.partition("=")
        parts = key.strip().split(".")
        try:
            if not eq or not all(parts):
                raise _Bad("give KEY=VALUE with a dotted key, e.g. --set train.epochs=5 or "
                           "--set 'space.activation=[relu, gelu]'")
            value = _override_value(raw)
            node = doc
            for i, part in enumerate(parts[:-1]):
                child = node.get(part)
                if part == "dataset" and i == 0 and isinstance(child, str):
                    child = {"name": child}  # dataset: digits, with an option set
                if child is None:
                    child = {}
                if not isinstance(child, dict):
                    raise _Bad(f"{'.'.join(parts[:i + 1])} is {child!r}, not a mapping to set "
                               f"'{parts[i + 1]}' in")
                node[part] = child
                node = child
            node[parts[-1]] = value
        except _Bad as exc:
            raise UserError(f"{path}: --set {item}: {exc}.") from None
    return doc


def _read(ld: _Loader, cls, doc: dict, more: tuple[str, ...] = ()) -> dict:
    """The checked value of every field of `cls` that the YAML gives, each in its section (an
    unknown key in a section is an error; `more` are keys its caller reads itself); a field
    the YAML leaves out keeps its default."""
    out = {}
    for f in settings(cls):
        section = f.metadata["section"]
        raw = doc if section is None else ld.mapping(section, doc.get(section),
                                                     [*(g.name for g in settings(cls, section)), *more])
        if f.name in raw:
            key = f.name if section is None else f"{section}.{f.name}"
            out[f.name] = ld.check(key, raw[f.name], f.metadata["check"])
    return out


def _expanded_size(node, path: str) -> int:
    """How many values the YAML node stands for once its aliases are followed (each alias
    counted as often as it is used, as a study's reader would see it), without expanding
    anything; a node that contains itself, or a size past MAX_YAML_NODES, is an error."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(n) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in visiting:
            raise UserError(f"{path}:{n.start_mark.line + 1}: an alias refers to the value that "
                            "contains it, so the study would be infinite; remove that alias.")
        visiting.add(id(n))
        children = ([c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode)
                    else n.value if isinstance(n, yaml.SequenceNode) else [])
        total = 1 + sum(size(c) for c in children)
        visiting.discard(id(n))
        if total > MAX_YAML_NODES:
            raise UserError(f"{path}: its aliases expand to more than {MAX_YAML_NODES:,} values; a "
                            "study is a few dozen. Write the values out, or use fewer aliases.")
        sizes[id(n)] = total
        return total

    return size(node) if node is not None else 0


def _document(text: str, path: str) -> tuple[_Loader, dict]:
    """The parsed YAML mapping, or one error naming the line of a syntax error. Aliases are
    bounded before anything is expanded."""
    try:
        _expanded_size(yaml.compose(text, Loader=yaml.SafeLoader), path)
        doc = yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to read as a study; a study is a few levels "
                        "of mappings and lists.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{path}{line}: malformed YAML ({problem}); fix the syntax there.") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a study must be a YAML mapping with keys such as dataset, "
                        f"model, train, space; got {type(doc).__name__}.")
    return _Loader(path, text), doc


TRACKERS = {"mlflow": ("uri", "experiment"), "tensorboard": ("dir",)}
"""Each tracker `tracking:` may name, and its keys (all optional strings)."""


def _tracking(ld: _Loader, raw) -> dict[str, dict[str, str]]:
    """`tracking:` → {tracker: {key: value}}; a tracker given as null or {} takes defaults."""
    out = {}
    for name, options in ld.mapping("tracking", raw, list(TRACKERS)).items():
        options = ld.mapping(f"tracking.{name}", options, list(TRACKERS[name]))
        out[name] = {k: ld.check(f"tracking.{name}.{k}", v, _str) for k, v in options.items()}
    return out


def _dataset(ld: _Loader, ds) -> dict[str, Any]:
    """`dataset:` → {name, options…}, each option checked against the dataset's own keys."""
    if isinstance(ds, str):
        ds = {"name": ds}
    if not isinstance(ds, dict) or "name" not in ds:
        raise ld.fail("dataset", "must be a mapping with a name, e.g. {name: digits}")
    name = ld.check("dataset.name", ds["name"], _str)
    if name not in DATASETS:
        hint = suggest(name, DATASETS.names())
        raise ld.fail("dataset.name", f"unknown dataset '{name}'.{hint} "
                                      f"Known: {', '.join(DATASETS.names())}.")
    options = {**DATASET_OPTIONS[name], **COMMON_OPTIONS}
    ld.mapping("dataset", ds, ("name", *options))
    kinds = {int: _int(1), float: _float(positive=True), str: _str, bool: _bool, "fraction": _fraction,
             "shape": _shape}
    return {"name": name, **{k: ld.check(f"dataset.{k}", v, kinds[options[k]])
                             for k, v in ds.items() if k != "name"}}


def _space(ld: _Loader, raw: dict, strategy: str,
           prefix: str = "space") -> tuple[dict[str, tuple], dict[str, Range]]:
    """`space:` (or `protocol.tune:`) → categorical axes (lists: crossed in a grid, categorical
    in a search) and searched ranges (mappings, only under a search strategy)."""
    space: dict[str, tuple] = {}
    ranges: dict[str, Range] = {}
    allowed = (*AXES, *(f"{f.metadata['section']}.{k}" for k, f in AXES.items()))
    ld.mapping(prefix, raw, allowed)
    for key, values in raw.items():
        fld = key.rpartition(".")[2]
        where = f"{prefix}.{key}"
        section = AXES[fld].metadata["section"]
        if "." in key and section != key.partition(".")[0]:
            raise ld.fail(where, f"'{fld}' belongs to {section}, not "
                                 f"{key.partition('.')[0]}; write {prefix}.{fld}.")
        if fld in space or fld in ranges:
            raise ld.fail(where, f"'{fld}' is given twice in {prefix}")
        if isinstance(values, dict):
            ranges[fld] = _range(ld, where, fld, values, strategy)
            continue
        if not isinstance(values, list):
            raise ld.fail(where, f"must be a list of values to try, e.g. [{values!r}]"
                          + ("" if strategy == "grid" or not AXES[fld].metadata["range"]
                             else ", or a range such as {low: 1, high: 10, log: true}"))
        if not values:
            raise ld.fail(where, "is an empty list; give at least one value (or remove the key)")
        checked = tuple(ld.check(where, v, AXES[fld].metadata["check"]) for v in values)
        if len(set(checked)) != len(checked):
            raise ld.fail(where, "lists a value twice")
        space[fld] = checked
    return space, ranges


def _baseline(ld: _Loader, given: str | None, activations: tuple[str, ...]) -> str:
    """report.baseline must be one of the study's activations; when not given, the declared
    default if the study has it, else its first activation."""
    if given is None:
        fallback = default(Study, "baseline")
        return fallback if fallback in activations else activations[0]
    if given not in activations:
        raise ld.fail("report.baseline", f"'{given}' is not among the study's activations "
                                         f"({', '.join(activations)}); pick one of them.")
    return given


def _range(ld: _Loader, where: str, fld: str, spec: dict, strategy: str) -> Range:
    """`{low, high, log}` → Range; only numeric fields, only under a search strategy."""
    if strategy == "grid":
        raise ld.fail(where, "is a range, which a grid cannot enumerate; give a list of values, "
                             "or set search.strategy to tpe, random, cmaes or qmc.")
    kind = AXES[fld].metadata["range"]
    if kind is None:
        raise ld.fail(where, f"'{fld}' is categorical; give a list of values to choose from.")
    ld.mapping(where, spec, ("low", "high", "log"))
    for k in ("low", "high"):
        if k not in spec:
            raise ld.fail(where, f"a range needs low and high, e.g. {{low: 1, high: 10}}; {k} is missing.")
    check = AXES[fld].metadata["check"]
    low = ld.check(f"{where}.low", spec["low"], check)
    high = ld.check(f"{where}.high", spec["high"], check)
    log = ld.check(f"{where}.log", spec.get("log", False), _bool)
    if not low < high:
        raise ld.fail(where, f"low ({low}) must be less than high ({high}); for one value write [{low}].")
    if log and low <= 0:
        raise ld.fail(f"{where}.log", f"a log range needs low > 0, got low = {low}.")
    return Range(float(low), float(high), log, kind is int)


def _search(ld: _Loader, sr: dict, values: dict, metric: str | None, fallback: str,
            dataset: dict) -> Search:
    """`search:` (its checked `values`) with its cross-field rules: n_trials only (and always)
    for a search; the objective is a validation metric — by default the validation twin of the
    report's metric — never a test one; its direction is the metric table's; a pruner needs an
    objective measured after every epoch."""
    grid = values.get("strategy", default(Search, "strategy")) == "grid"
    if grid and "n_trials" in sr:
        raise ld.fail("search.n_trials", "is not used by strategy grid, which trains every grid "
                                         "point once; remove it or pick tpe, random, cmaes or qmc.")
    if not grid and "n_trials" not in sr:
        raise ld.fail("search", f"strategy {values['strategy']} needs n_trials, the number of "
                                "trials to run (complete, pruned and failed), e.g. n_trials: 60.")
    if "objective" in values and METRICS[values["objective"]].split == "test":
        objective = values["objective"]
        raise ld.fail("search.objective", f"{objective} is measured on the test split, which is "
                                          "only reported: choosing by it would make the test numbers "
                                          f"optimistic. Use its validation twin, {val_name(objective)}.")
    reported = metric or fallback
    has_val = dataset.get("val_fraction", VAL_FRACTION) > 0 or dataset["name"] == "npz"
    twin = val_name(reported) if METRICS[reported].split == "test" and has_val else reported
    objective = values.setdefault("objective", twin)
    values.setdefault("direction", METRICS[objective].direction)
    if values.get("pruner", default(Search, "pruner")) != "none" and objective not in PRUNABLE:
        raise ld.fail("search.pruner", f"pruning needs an objective measured after every epoch "
                                       f"({', '.join(PRUNABLE)}); {objective} is measured only at "
                                       "the end. Use pruner: none or one of those objectives.")
    return Search(**values)


def _families_apply(ld: _Loader, families: set[str], space: dict, ranges: dict, metric: str,
                    search: Search) -> None:
    """An axis must change some family the study trains, and the report's metric (and a
    search's objective) must be one they produce; otherwise the study would train to the end
    and have nothing to show."""
    for key in (*space, *ranges):
        applies = set(owners(key))
        if not applies & families:
            raise ld.fail(f"space.{key}", f"applies to {', '.join(sorted(applies))} only, and this "
                                          f"study trains {', '.join(sorted(families))}: it would change "
                                          "nothing. Remove it, or add a family it applies to.")
    for key, name, need_all in (("report.metric", metric, False), ("search.objective", search.objective,
                                                                    not search.is_grid)):
        has = set(METRICS[name].families) & families
        if not has or (need_all and has != families):
            lacking = sorted(families - set(METRICS[name].families))
            raise ld.fail(key, f"{name} is measured for {', '.join(sorted(METRICS[name].families))} "
                               f"only, and this study trains {', '.join(lacking)}: "
                               f"{'it has' if len(lacking) == 1 else 'they have'} no {name}. Pick a "
                               "metric every family has, such as test_recon (or fid for a GAN).")


def _bounded(ld: _Loader, space: dict, seeds: tuple, search: Search, protocol) -> None:
    """A study with more members than MAX_MEMBERS cannot finish: refuse it with the count."""
    configs = (math.prod(len(v) for v in space.values()) * (len(ARMS) if protocol else 1)
               if search.is_grid else search.n_trials or 0)
    members = configs * len(seeds)
    if members > MAX_MEMBERS:
        raise ld.fail("space" if search.is_grid else "search.n_trials",
                      f"makes {members:,} members ({configs:,} configurations × {len(seeds):,} seeds); "
                      f"a study of more than {MAX_MEMBERS:,} cannot finish. Split it or narrow it.")


def _architecture(ld: _Loader, base: dict, space: dict) -> None:
    """An mlp needs a hidden layer; channels only shape a conv model."""
    archs = space.get("arch", (base.get("arch", default(RunConfig, "arch")),))
    hiddens = space.get("hidden", (base.get("hidden", default(RunConfig, "hidden")),))
    if "mlp" in archs and () in hiddens:
        key = "space.hidden" if "hidden" in space else "model.hidden"
        raise ld.fail(key, "is [], which leaves an mlp without a hidden layer; give widths such "
                           "as [256] ([] is for arch: conv, whose convolutions come first).")
    if "conv" not in archs and ("channels" in space or "channels" in base):
        key = "space.channels" if "channels" in space else "model.channels"
        raise ld.fail(key, "gives the channels of convolutions, which arch mlp does not have; "
                           "set model.arch: conv or remove it.")


def _needs_validation(ld: _Loader, dataset: dict, search: Search, protocol: Protocol | None) -> None:
    """Whatever chooses (a search, a pruner, the tuned protocol) reads the validation split."""
    if dataset.get("val_fraction", VAL_FRACTION) > 0:
        return
    chooser = ("the tuned protocol" if protocol else f"search.strategy {search.strategy}"
               if not search.is_grid else f"search.pruner {search.pruner}" if search.pruner != "none"
               else None)
    if chooser:
        raise ld.fail("dataset.val_fraction", f"is 0, but {chooser} chooses by the validation "
                                              "split; give it a share of the training data, e.g. 0.1.")


def _protocol(ld: _Loader, doc: dict, top: dict, space: dict, strategy: str) -> Protocol:
    """`protocol:`: the tuned keys (lists or ranges, none of them a compared axis), the budget,
    and final_seeds (the study's seeds)."""
    budget = _read(ld, Protocol, doc, more=("tune", "final_seeds"))
    raw = doc["protocol"]
    if strategy != "grid":
        raise ld.fail("protocol", "runs its own search for each activation and cell; it cannot be "
                                  "combined with search.strategy " f"{strategy}. Remove one of them.")
    if not raw.get("tune"):
        raise ld.fail("protocol", "needs tune: the hyperparameters to tune for each activation, "
                                  "e.g. {train.lr: {low: 1.0e-4, high: 3.0e-3, log: true}}.")
    for key in raw["tune"] if isinstance(raw["tune"], dict) else ():
        if not isinstance(key, str):
            raise ld.fail("protocol.tune", f"has the key {_shown(key)}, which is not text; name a "
                                           "setting such as train.lr or model.init.")
        name = key.rpartition(".")[2]
        if name == "activation" or name in space:
            raise ld.fail(f"protocol.tune.{key}", f"'{name}' is compared in space; a key is either "
                                                  "compared or tuned, not both.")
    tuned, ranges = _space(ld, raw["tune"], "tpe", "protocol.tune")
    if "final_seeds" in raw:
        if "seeds" in doc:
            raise ld.fail("protocol.final_seeds", "and seeds both give the final seeds; keep one.")
        top["seeds"] = ld.check("protocol.final_seeds", raw["final_seeds"], _seeds)
    if TUNING_SEED in top.get("seeds", ()):
        raise ld.fail("protocol.final_seeds", f"{TUNING_SEED} is the tuning seed; final seeds must "
                                              "be fresh.")
    return Protocol(tuned, ranges, **budget)


def redact(url: str) -> str:
    """A storage URL fit to print: the password of user:password@ (SQLAlchemy's own rendering,
    hide_password) and the value of a ?password= query parameter become ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        shown = make_url(url).render_as_string(hide_password=True) if "@" in url else url
    except ArgumentError:  # not a URL at all
        shown = url
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", shown)


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
