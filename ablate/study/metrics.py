"""The one table of metrics: every quantity a run records, defined once. Torch-free.

Owns: each metric's name, label with unit, direction (higher is better or not), the split it
is computed on, the per-epoch quantity a pruner may watch in its place, which model families
have it, and whether it is a final result (a runs.csv column a report can rank by) or only a
per-epoch record (epochs.csv). The study parser, tables, statistics, plots and report all read
it; nothing else writes a metric's direction or label.
Does not own: how a metric is computed (estimators.py for the math, training/evaluation.py and samples.py for the passes).
Definitions: docs/architecture.md, "Metrics".
"""

from __future__ import annotations

from dataclasses import dataclass

from ablate.nets.families import FAMILY, having


@dataclass(frozen=True)
class Metric:
    """One measured quantity of a member."""

    name: str
    """The runs.csv / epochs.csv column, the YAML value of search.objective and report.metric."""
    label: str
    """How figures and tables name it, with its unit."""
    higher_is_better: bool = False
    split: str = "test"
    """The data it is computed on: test (reported only), validation (what a search, a pruner
    or the tuned protocol may choose by), train, or none (a cost)."""
    per_epoch: str | None = None
    """The per-epoch record (of the validation split) a pruner compares when this metric is
    the objective (None: known only at the end, so it cannot be pruned on)."""
    kind: str = "reconstruction"
    """Which families have it: those that measure this kind (families.Family.measures:
    reconstruction, posterior, samples), any family, or a part of a family's loss (part)."""
    final: bool = True
    """A final result of runs.csv (True) or only a per-epoch record of epochs.csv (False)."""
    low: float | None = None
    high: float | None = None
    """The metric's range (a fraction lies in [0, 1], a count or a divergence is ≥ 0): an
    interval over a few seeds is clipped to it rather than reaching past it."""
    rope: float = 0.0
    """The region of practical equivalence, in the metric's unit: two activations whose
    difference lies within ±rope are practically equivalent (report.rope overrides it for
    report.metric)."""

    @property
    def families(self) -> frozenset[str]:
        """The model families that have this metric."""
        if self.kind == "part":
            part = self.name.removeprefix("train_")
            return frozenset(f.name for f in FAMILY.values() if part in f.parts)
        return having(self.kind)

    @property
    def direction(self) -> str:
        """Optuna's word for it."""
        return "maximize" if self.higher_is_better else "minimize"

    @property
    def better(self) -> str:
        return "higher" if self.higher_is_better else "lower"


POSTERIOR, SAMPLES = "posterior", "samples"
ZERO_GRAD = 1e-3
"""epochs.csv's `zero_grad_<layer>`: a unit's gradient counts as zero when its norm is below
this fraction of the root mean square of its layer's units' norms (for that member and step):
a dead ReLU's is exactly 0, a saturated sigmoid's orders of magnitude below its layer's."""

DISENTANGLEMENT = ("mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness")
"""The disentanglement metrics (training/disentanglement.py), measured on data with factors."""
_TEST = (
    Metric("test_nelbo", "test −ELBO (nats/image)", rope=0.1),
    Metric("test_recon", "test reconstruction (nats/image)", rope=0.1),
    Metric("test_kl", "test KL (nats/image)", kind=POSTERIOR, rope=0.1, low=0.0),
    Metric("test_nll", "test NLL (IWAE, nats/image)", kind=POSTERIOR, rope=0.1),
    Metric("active_units", "active units", higher_is_better=True, rope=0.5, low=0.0),
    Metric("mutual_info", "I(x; z) (nats)", higher_is_better=True, kind=POSTERIOR, rope=0.05, low=0.0),
    Metric("dead_units", "dead hidden units (fraction)", rope=0.01, low=0.0, high=1.0),
    Metric("probe_accuracy", "linear-probe accuracy", higher_is_better=True, rope=0.005, low=0.0, high=1.0),
    *(Metric(name, label, higher_is_better=True, rope=0.01, low=0.0, high=1.0) for name, label in zip(
        DISENTANGLEMENT, ("MIG (mutual information gap)", "SAP score", "DCI disentanglement",
                          "DCI completeness", "DCI informativeness (factor accuracy)"))),
    Metric("fid", "FID (classifier features)", kind=SAMPLES, rope=1.0, low=0.0),
    Metric("kid", "KID ×10³ (classifier features)", kind=SAMPLES, rope=100.0),
    Metric("precision", "sample precision (k = 3)", higher_is_better=True, kind=SAMPLES, rope=0.01,
           low=0.0, high=1.0),
    Metric("recall", "sample recall (k = 3)", higher_is_better=True, kind=SAMPLES, rope=0.01,
           low=0.0, high=1.0),
    Metric("class_coverage", "class coverage of samples", higher_is_better=True, kind=SAMPLES,
           rope=0.01, low=0.0, high=1.0),
)
"""Measured once, at the end, on the test split: reported, never used to choose."""


def val_name(test_name: str) -> str:
    """The validation twin of a test metric: test_nll → val_nll, active_units → val_active_units."""
    return "val_" + test_name.removeprefix("test_")


def _val(m: Metric) -> Metric:
    """A test metric's twin on the validation split. Per epoch only the −ELBO and its parts are
    measured; the negative ELBO bounds the NLL from above, so a pruner watches it in its place."""
    label = m.label.replace("test ", "validation ") if "test " in m.label else f"validation {m.label}"
    per_epoch = {"test_nelbo": "val_nelbo", "test_nll": "val_nelbo", "test_recon": "val_recon",
                 "test_kl": "val_kl"}.get(m.name)
    return Metric(val_name(m.name), label, m.higher_is_better, "validation", per_epoch, m.kind,
                  low=m.low, high=m.high, rope=m.rope)


_TABLE = (
    *_TEST,
    *map(_val, _TEST),
    Metric("train_seconds", "train seconds per member", split="none", kind="any"),
    Metric("train_loss", "train loss (nats/image)", split="train", final=False, kind="any"),
    Metric("train_g_loss", "generator loss", split="train", final=False, kind="part"),
    Metric("train_d_loss", "discriminator loss", split="train", final=False, kind="part"),
    Metric("train_recon", "train reconstruction (nats/image)", split="train", final=False, kind="part"),
    Metric("train_kl", "train KL (nats/image)", split="train", final=False, kind="part"),
)
METRICS: dict[str, Metric] = {m.name: m for m in _TABLE}
FINAL: tuple[str, ...] = tuple(m.name for m in _TABLE if m.final)
"""The runs.csv metrics, in table order: what search.objective and report.metric may name."""
PRUNABLE: tuple[str, ...] = tuple(m.name for m in _TABLE if m.final and m.per_epoch)


def label(name: str) -> str:
    """A metric's label with its unit; any other column's own name."""
    return METRICS[name].label if name in METRICS else name


def maximize(name: str) -> bool:
    """Whether higher is better for the metric `name`."""
    return METRICS[name].higher_is_better


def twin_on_test(name: str) -> str:
    """The test twin of a validation metric (itself for any other metric)."""
    if METRICS[name].split != "validation":
        return name
    return next(m.name for m in _TEST if val_name(m.name) == name)
