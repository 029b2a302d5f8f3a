"""The study's schema: what a study is, field by field. Torch-free.

Owns: each YAML field's type, section, check, whether `space:` may vary it (as a list, or as a
range under a search) and its default, written once as dataclass field metadata (`setting`)
and read by one generic loader (loader.py); `RunConfig` (one member's model and training),
`Range`, `Search`, `Protocol` and `Study` (validated, frozen), the grid over `space`, and the
settings a store is keyed by. Does not own: reading YAML (loader.py), the cross-field rules
(rules.py), loading data (data/), metric definitions (metrics.py), or running anything (run/).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any, Callable

from ablate.data.datasets import VAL_FRACTION
from ablate.nets.activations import INIT_SCHEMES, pieces_of
from ablate.nets.families import FAMILIES, FAMILY
from ablate.study import checks
from ablate.study.metrics import FINAL
from ablate.study.storage import check_storage

ARCHS = ("mlp", "conv")
BUILT_IN_ONLY = ("arch", "channels", "hidden", "init", "dropout", "decoder_activation")
"""Settings of the built-in model that a user's `model.module` does not read (its own
architecture, init and layers are the factory's; `options` reach it)."""
LATER_FIELDS = {"module": None, "options": "{}", "dtype": "fp32"}
"""Fields added after stores existed, with the values they had implicitly before: a study
that leaves them so keeps the fingerprint it had before they existed."""
STRATEGIES = ("grid", "tpe", "random", "cmaes", "qmc")
PRUNERS = ("none", "median", "hyperband", "wilcoxon")
STORAGE_SCHEMES = ("sqlite", "postgresql")


# ---------------------------------------------------------------------------------------------
# The schema: one `setting` per YAML field.

def setting(default, check: Callable[[Any], Any], section: str | None = None,
            axis: bool = False, range: type | None = None) -> Any:
    """A YAML field: its default, its check (returns the normalised value or raises checks.Bad), the
    YAML section it is written in (None: top level), whether `space:` may vary it, and for a
    numeric axis the type (int or float) of a searched range. Which families a model setting
    changes, each family says (families.Family.own)."""
    return field(default=default, metadata={"check": check, "section": section, "axis": axis,
                                            "range": range})


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one trained model except its seed. Field names are the column
    names of runs.csv and the keys a study's `space:` may vary."""

    activation: str = setting("relu", checks.activation, "model", axis=True)
    """Nonlinearity of every hidden layer (`ablate list activations`); of the encoder's when
    decoder_activation is given."""
    decoder_activation: str | None = setting(None, checks.activation, "model", axis=True)
    """The decoder's hidden layers' nonlinearity; None: the same as activation."""
    latent_dim: int = setting(8, checks.whole(1, checks.MAX_WIDTH), "model", axis=True, range=int)
    """Number of latent dimensions."""
    kl_weight: float = setting(1.0, checks.number(lo=0.0), "train", axis=True, range=float)
    """β: loss per image = recon + kl_weight · KL, in nats."""
    family: str = setting("vae", checks.choice(*FAMILIES), "model", axis=True)
    """vae (Gaussian encoder, reparameterised), or a deterministic autoencoder: ae (plain), dae
    (denoising), sae (sparse), cae (contractive)."""
    noise: float = setting(0.3, checks.fraction, "model", axis=True, range=float)
    """dae: each training input pixel is zeroed with this probability (masking noise)."""
    sparsity: float = setting(1.0e-3, checks.number(lo=0.0), "model", axis=True, range=float)
    """sae: λ of the penalty λ·Σ|z| per image on the code."""
    contraction: float = setting(1.0e-3, checks.number(lo=0.0), "model", axis=True, range=float)
    """cae: λ of the penalty λ·‖∂z/∂x‖²_F per image (Rifai et al. 2011)."""
    dropout: float = setting(0.0, checks.fraction, "model", axis=True, range=float)
    """Dropout probability after each hidden activation, in training only."""
    arch: str = setting("mlp", checks.choice(*ARCHS), "model", axis=True)
    """mlp (fully connected) or conv (convolutions before the fully connected layers)."""
    channels: tuple[int, ...] = setting((32, 64), checks.channels, "model", axis=True)
    """arch conv: output channels of each 4×4 stride-2 convolution (each halves H and W); the
    decoder mirrors them with transposed convolutions. Not used by arch mlp."""
    hidden: tuple[int, ...] = setting((256,), checks.hidden, "model", axis=True)
    """Hidden widths of the fully connected encoder (after the convolutions for arch conv,
    where it may be []); the decoder mirrors them."""
    likelihood: str = setting("bernoulli", checks.choice("bernoulli", "gaussian"), "model", axis=True)
    """bernoulli (pixels in [0,1] as probabilities) or gaussian (learned shared variance)."""
    epochs: int = setting(30, checks.whole(1, checks.MAX_EPOCHS, " (a study that long cannot finish)"), "train", axis=True,
                          range=int)
    """Passes over the training split."""
    batch_size: int = setting(128, checks.whole(1), "train", axis=True, range=int)
    """Examples per gradient step."""
    lr: float = setting(1.0e-3, checks.number(positive=True), "train", axis=True, range=float)
    """Adam learning rate."""
    dtype: str = setting("fp32", checks.choice("fp32", "bf16"), "train", axis=True)
    """The precision of training steps' matmuls and convolutions: fp32, or bf16 (autocast;
    weights, losses, Adam state and every evaluation stay float32). Not called `precision`:
    that is a sample-quality metric's column."""
    kl_warmup_epochs: int = setting(0, checks.whole(0), "train", axis=True, range=int)
    """Epochs over which the KL weight ramps linearly from 0 to kl_weight (0: no warm-up)."""
    init: str = setting("auto", checks.choice("auto", *INIT_SCHEMES), "model", axis=True)
    """Hidden-layer weight init: auto (the one each activation needs) or default (PyTorch
    Linear), kaiming, xavier, lecun for every activation."""
    module: str | None = setting(None, checks.module_path, "model", axis=True)
    """A user's model, `package.module:factory` (nets/plugin.py) called as factory(activation,
    latent_dim, shape, **options); None: the built-in one arch, channels and hidden shape."""
    options: str = setting("{}", checks.options, "model", axis=True)
    """module: the factory's keyword arguments, as canonical JSON text (a YAML mapping)."""
    dataset: str = "digits"
    """The label of the member's dataset (Study.datasets): `space.dataset` varies it; the
    `dataset:` section, or each entry of `space.dataset`, says what it holds."""

    @property
    def decoder(self) -> str:
        """The decoder's activation."""
        return self.decoder_activation or self.activation

    def applies(self, key: str) -> bool:
        """Whether field `key` changes this configuration's model (kl_weight: only a vae's;
        arch, channels, hidden, init, dropout and decoder_activation only a built-in model's;
        options only a module's)."""
        if key in BUILT_IN_ONLY and self.module:
            return False
        if key == "options":
            return bool(self.module)
        return FAMILY[self.family].reads(key)

    @property
    def cohort_key(self) -> tuple:
        """Members with equal keys can share a fleet (same dataset, family, likelihood,
        architecture — for conv the same channels, for a user's module the same module —,
        depth, schedule, dtype, and maxout's pieces on each side: they set the widths of the
        layers before its activations)."""
        if self.module:
            return (self.dataset, self.family, self.likelihood, self.module, self.batch_size, self.epochs,
                    self.dtype)
        channels = self.channels if self.arch == "conv" else ()
        return (self.dataset, self.family, self.likelihood, self.arch, channels, len(self.hidden),
                self.batch_size, self.epochs, self.dtype, pieces_of(self.activation), pieces_of(self.decoder))


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

    strategy: str = setting("grid", checks.choice(*STRATEGIES), "search")
    n_trials: int | None = setting(None, checks.whole(1), "search")
    """Trials to run (complete + pruned + failed); None under grid (every point once)."""
    objective: str = setting("val_nll", checks.choice(*FINAL), "search")
    """The runs.csv metric a trial's value is (mean over its seeds): a validation metric, never
    a test one; when not given, the validation twin of the study's report.metric."""
    direction: str = setting("minimize", checks.choice("minimize", "maximize"), "search")
    """When not given, the objective's direction in the metric table."""
    pruner: str = setting("none", checks.choice(*PRUNERS), "search")
    sampler_seed: int = setting(0, checks.whole(0), "search")
    cohort_trials: int | None = setting(None, checks.auto(checks.whole(1)), "search")
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
    budget: int = setting(8, checks.whole(1), "protocol")
    """Tuning trials per activation and cell."""

    @property
    def keys(self) -> list[str]:
        return [*self.space, *self.ranges]


@dataclass(frozen=True)
class Study:
    """A validated study: the grid of configurations × seeds and how to evaluate them."""

    name: str = setting("", checks.name)
    """Results go to results/<name>/; when not given, the file's stem."""
    description: str = setting("", checks.text)
    datasets: dict[str, dict[str, Any]] = field(default_factory=lambda: {"digits": {"name": "digits"}})
    """Each dataset's label → its options (checked against data.DATASET_OPTIONS): the `dataset:`
    section's one, or every entry of `space.dataset` (then an axis: each member trains and is
    measured on its own dataset's splits; a cohort holds one dataset)."""
    base: RunConfig = field(default_factory=RunConfig)
    """The `model:` and `train:` sections: every member's values outside `space`."""
    iwae_samples: int = setting(100, checks.whole(1, checks.MAX_IWAE), "eval")
    dci_estimators: int = setting(100, checks.whole(1, 1000), "eval")
    """Boosting stages of DCI's gradient-boosted trees (data with factors): 100 is
    disentanglement_lib's (scikit-learn's default); fewer are faster and score differently."""
    seeds: tuple[int, ...] = setting((0, 1, 2), checks.seeds)
    """Repeats of every configuration, never a search axis."""
    space: dict[str, tuple] = field(default_factory=dict)
    """Categorical axes: field → the values to try (a YAML list)."""
    ranges: dict[str, Range] = field(default_factory=dict)
    """Searched intervals: field → Range (only under a search strategy)."""
    search: Search = field(default_factory=Search)
    protocol: Protocol | None = None
    """The tuned protocol, when the study asks for it (its grid points are then the cells in
    which each activation is tuned, and every point is trained in both arms)."""
    storage: str = setting("sqlite", check_storage)
    """sqlite (results/<name>/study.db) or a database URL shared by several machines."""
    device: str = setting("auto", checks.device)
    checkpoint_minutes: float = setting(5.0, checks.number(0))
    """A training cohort's state is saved at an epoch end at most this often (0: never), so a
    killed run resumes it from there."""
    cohort_size: int | None = setting(None, checks.auto(checks.whole(1)))
    """Members trained together; None (auto): what fits in half the free memory."""
    baseline: str = setting("relu", checks.string, "report")
    """The activation the paired tests compare against; when not given and the study lacks
    relu, its first activation."""
    metric: str = setting("test_nll", checks.choice(*FINAL), "report")
    """What the report ranks by; when not given, the test twin of search.objective if that is
    given, else test_nll for studies with a VAE and test_recon otherwise."""
    rope: float | None = setting(None, checks.auto(checks.number(0.0)), "report")
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
        base = {k: v for k, v in asdict(self.base).items()
                if k != "dataset" and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
        one = len(self.datasets) == 1 and "dataset" not in self.space
        keyed = {"dataset": next(iter(self.datasets.values())) if one else self.datasets, "base": base,
                 "seeds": self.seeds, "space": {k: list(v) for k, v in self.space.items()},
                 "iwae": self.iwae_samples}
        if self.dci_estimators != default(Study, "dci_estimators"):
            keyed["dci_estimators"] = self.dci_estimators
        fractions = {label: ds.get("val_fraction", VAL_FRACTION) for label, ds in self.datasets.items()}
        keyed["val_fraction"] = next(iter(fractions.values())) if one else fractions
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


def read_fields(ld, cls, doc: dict, more: tuple[str, ...] = ()) -> dict:
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




AXES: dict[str, Field] = {f.name: f for f in settings(RunConfig) if f.metadata["axis"]}
"""RunConfig fields a study's `space:` may vary."""
SECTIONS = tuple(dict.fromkeys(f.metadata["section"] for f in settings(RunConfig)))
"""The YAML sections RunConfig fields are written in (model, train)."""
TOP_KEYS = tuple(dict.fromkeys([*(f.metadata["section"] or f.name for f in settings(Study)),
                                "dataset", *SECTIONS, "space", "search", "protocol", "tracking"]))
"""Every key a study may have at its top level."""
