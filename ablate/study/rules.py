"""The cross-field rules of a study: what one field allows of another, and the defaults that
follow from other fields. Torch-free.

Owns: the dataset section against the registry, the space (lists and searched ranges), the
baseline, the search's objective and direction, an axis some family has, a metric some family
produces, a validation split for anything that chooses, the architecture's needs, the tuned
protocol, tracking, and the bounds a study can finish within. Each rule raises through the
loader (`ld.fail`), so its message names the file, line and key.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ablate.data.datasets import COMMON_OPTIONS, DATASET_OPTIONS, DATASETS, VAL_FRACTION
from ablate.nets.activations import pieces_of
from ablate.nets.families import owners
from ablate.registry import suggest
from ablate.streams import TUNING_SEED
from ablate.study import checks
from ablate.study.metrics import METRICS, PRUNABLE, val_name
from ablate.study.schema import ARMS, AXES, BUILT_IN_ONLY, Protocol, Range, RunConfig, Search, Study, default, read_fields

if TYPE_CHECKING:
    from ablate.study.loader import Loader

TRACKERS = {"mlflow": ("uri", "experiment"), "tensorboard": ("dir",)}
"""Each tracker `tracking:` may name, and its keys (all optional strings)."""


def tracking_section(ld: Loader, raw) -> dict[str, dict[str, str]]:
    """`tracking:` → {tracker: {key: value}}; a tracker given as null or {} takes defaults."""
    out = {}
    for name, options in ld.mapping("tracking", raw, list(TRACKERS)).items():
        options = ld.mapping(f"tracking.{name}", options, list(TRACKERS[name]))
        out[name] = {k: ld.check(f"tracking.{name}.{k}", v, checks.string) for k, v in options.items()}
    return out


def dataset_section(ld: Loader, ds, key: str = "dataset") -> dict[str, Any]:
    """`dataset:` (or one entry of `space.dataset`, at `key`) → {name, options…}, each option
    checked against the dataset's own keys; `label` (default: the name) must be a plain name."""
    if isinstance(ds, str):
        ds = {"name": ds}
    if not isinstance(ds, dict) or "name" not in ds:
        raise ld.fail(key, "must be a mapping with a name, e.g. {name: digits}")
    name = ld.check(f"{key}.name", ds["name"], checks.string)
    if name not in DATASETS:
        hint = suggest(name, DATASETS.names())
        raise ld.fail(f"{key}.name", f"unknown dataset '{name}'.{hint} "
                                     f"Known: {', '.join(DATASETS.names())}.")
    options = {**DATASET_OPTIONS[name], **COMMON_OPTIONS}
    ld.mapping(key, ds, ("name", "label", *options))
    kinds = {int: checks.whole(1), float: checks.number(positive=True), str: checks.string, bool: checks.boolean,
             "fraction": checks.fraction, "shape": checks.shape, "seed": checks.whole(0)}
    checked = {k: ld.check(f"{key}.{k}", v, checks.name if k == "label" else kinds[options[k]])
               for k, v in ds.items() if k != "name"}
    return {"name": name, **checked}


def datasets_section(ld: Loader, doc: dict) -> dict[str, dict[str, Any]]:
    """Each dataset's label → its options: the `dataset:` section's one, or every entry of
    `space.dataset` (names or mappings) — not both, no label twice, and not under a search
    (its objective would compare one dataset's numbers with another's)."""
    space = doc.get("space") if isinstance(doc.get("space"), dict) else {}
    if "dataset" not in space:
        one = dataset_section(ld, doc.get("dataset", default(Study, "datasets")["digits"]))
        return {one.get("label", one["name"]): one}
    if "dataset" in doc:
        raise ld.fail("dataset", "and space.dataset both say what data to train on; list every "
                                 "dataset (with its options) in space.dataset and remove dataset:.")
    listed = space["dataset"]
    search = doc.get("search") if isinstance(doc.get("search"), dict) else {}
    strategy = search.get("strategy", default(Search, "strategy"))
    if strategy != "grid":
        raise ld.fail("space.dataset", f"lists datasets, but search.strategy {strategy} would compare "
                                       "objective values across them, and one dataset's nats are not "
                                       "another's; search each dataset in a study of its own, or use "
                                       "strategy grid.")
    if not isinstance(listed, list) or not listed:
        raise ld.fail("space.dataset", "must be a list of datasets, names or mappings, e.g. "
                                       "[digits, {name: sprites, size: 32}]")
    out: dict[str, dict[str, Any]] = {}
    for i, ds in enumerate(listed):
        one = dataset_section(ld, ds, f"space.dataset[{i}]")
        label = one.get("label", one["name"])
        if label in out:
            raise ld.fail(f"space.dataset[{i}]", f"is a second dataset called '{label}'; give each "
                                                 f"a distinct label, e.g. {{name: {one['name']}, label: "
                                                 f"{one['name']}_2}}.")
        out[label] = one
    return out


def has_validation(ds: dict[str, Any]) -> bool:
    """Whether a dataset holds a validation split: a share of its training rows, or an npz's own."""
    return ds.get("val_fraction", VAL_FRACTION) > 0 or ds["name"] == "npz"


def space_section(ld: Loader, raw: dict, strategy: str,
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
            ranges[fld] = searched_range(ld, where, fld, values, strategy)
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


def baseline(ld: Loader, given: str | None, activations: tuple[str, ...]) -> str:
    """report.baseline must be one of the study's activations; when not given, the declared
    default if the study has it, else its first activation."""
    if given is None:
        fallback = default(Study, "baseline")
        return fallback if fallback in activations else activations[0]
    if given not in activations:
        raise ld.fail("report.baseline", f"'{given}' is not among the study's activations "
                                         f"({', '.join(activations)}); pick one of them.")
    return given


def searched_range(ld: Loader, where: str, fld: str, spec: dict, strategy: str) -> Range:
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
    log = ld.check(f"{where}.log", spec.get("log", False), checks.boolean)
    if not low < high:
        raise ld.fail(where, f"low ({low}) must be less than high ({high}); for one value write [{low}].")
    if log and low <= 0:
        raise ld.fail(f"{where}.log", f"a log range needs low > 0, got low = {low}.")
    return Range(float(low), float(high), log, kind is int)


def search_section(ld: Loader, sr: dict, values: dict, metric: str | None, fallback: str,
            datasets: dict) -> Search:
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
    has_val = all(map(has_validation, datasets.values()))
    twin = val_name(reported) if METRICS[reported].split == "test" and has_val else reported
    objective = values.setdefault("objective", twin)
    values.setdefault("direction", METRICS[objective].direction)
    if values.get("pruner", default(Search, "pruner")) != "none" and objective not in PRUNABLE:
        raise ld.fail("search.pruner", f"pruning needs an objective measured after every epoch "
                                       f"({', '.join(PRUNABLE)}); {objective} is measured only at "
                                       "the end. Use pruner: none or one of those objectives.")
    return Search(**values)


def families_apply(ld: Loader, families: set[str], space: dict, ranges: dict, metric: str,
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


def bounded(ld: Loader, space: dict, seeds: tuple, search: Search, protocol) -> None:
    """A study with more members than checks.MAX_MEMBERS cannot finish: refuse it with the count."""
    configs = (math.prod(len(v) for v in space.values()) * (len(ARMS) if protocol else 1)
               if search.is_grid else search.n_trials or 0)
    members = configs * len(seeds)
    if members > checks.MAX_MEMBERS:
        raise ld.fail("space" if search.is_grid else "search.n_trials",
                      f"makes {members:,} members ({configs:,} configurations × {len(seeds):,} seeds); "
                      f"a study of more than {checks.MAX_MEMBERS:,} cannot finish. Split it or narrow it.")


def own_model(ld: Loader, base: dict, space: dict, ranges: dict) -> None:
    """A model.module reads its options, not the built-in model's settings (refused rather
    than ignored); options need a module."""
    if any(space.get("module", (base.get("module"),))):
        for key in BUILT_IN_ONLY:
            if key in base or key in space or key in ranges:
                where = f"space.{key}" if key in space or key in ranges else f"{AXES[key].metadata['section']}.{key}"
                raise ld.fail(where, "shapes the built-in model, which model.module replaces; pass "
                                     "what your factory needs through model.options (its keyword arguments).")
        for key in ("activation", "decoder_activation"):
            for name in space.get(key, (base.get(key),)):
                if name and pieces_of(name) > 1:
                    where = f"space.{key}" if key in space else f"{AXES[key].metadata['section']}.{key}"
                    raise ld.fail(where, f"is {name}, which widens the layer before it to "
                                         f"{pieces_of(name)} pieces per unit; model.module's layers "
                                         "are its own, so give it an elementwise activation.")
    elif "options" in base or "options" in space:
        raise ld.fail("space.options" if "options" in space else "model.options",
                      "holds keyword arguments for model.module's factory, and the study names no "
                      "model.module; give one, or remove options.")


def architecture(ld: Loader, base: dict, space: dict) -> None:
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


def needs_validation(ld: Loader, datasets: dict, axis: bool, search: Search,
                     protocol: Protocol | None) -> None:
    """Whatever chooses (a search, a pruner, the tuned protocol) reads the validation split."""
    chooser = ("the tuned protocol" if protocol else f"search.strategy {search.strategy}"
               if not search.is_grid else f"search.pruner {search.pruner}" if search.pruner != "none"
               else None)
    for i, ds in enumerate(datasets.values()):
        if chooser and ds.get("val_fraction", VAL_FRACTION) == 0:
            key = f"space.dataset[{i}]" if axis else "dataset"
            raise ld.fail(f"{key}.val_fraction", f"is 0, but {chooser} chooses by the validation "
                                                 "split; give it a share of the training data, e.g. 0.1.")


def protocol_section(ld: Loader, doc: dict, top: dict, space: dict, strategy: str) -> Protocol:
    """`protocol:`: the tuned keys (lists or ranges, none of them a compared axis), the budget,
    and final_seeds (the study's seeds)."""
    budget = read_fields(ld, Protocol, doc, more=("tune", "final_seeds"))
    raw = doc["protocol"]
    if strategy != "grid":
        raise ld.fail("protocol", "runs its own search for each activation and cell; it cannot be "
                                  "combined with search.strategy " f"{strategy}. Remove one of them.")
    if not raw.get("tune"):
        raise ld.fail("protocol", "needs tune: the hyperparameters to tune for each activation, "
                                  "e.g. {train.lr: {low: 1.0e-4, high: 3.0e-3, log: true}}.")
    for key in raw["tune"] if isinstance(raw["tune"], dict) else ():
        if not isinstance(key, str):
            raise ld.fail("protocol.tune", f"has the key {checks.shown(key)}, which is not text; name a "
                                           "setting such as train.lr or model.init.")
        name = key.rpartition(".")[2]
        if name == "activation" or name in space:
            raise ld.fail(f"protocol.tune.{key}", f"'{name}' is compared in space; a key is either "
                                                  "compared or tuned, not both.")
    tuned, ranges = space_section(ld, raw["tune"], "tpe", "protocol.tune")
    if "final_seeds" in raw:
        if "seeds" in doc:
            raise ld.fail("protocol.final_seeds", "and seeds both give the final seeds; keep one.")
        top["seeds"] = ld.check("protocol.final_seeds", raw["final_seeds"], checks.seeds)
    if TUNING_SEED in top.get("seeds", ()):
        raise ld.fail("protocol.final_seeds", f"{TUNING_SEED} is the tuning seed; final seeds must "
                                              "be fresh.")
    return Protocol(tuned, ranges, **budget)
