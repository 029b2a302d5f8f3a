"""The report's sections, each a function of the report's `Context` that writes into its document.

Owns: the wording, tables and figure captions of the summary, setup (with the weight init each
activation got, per arm), results, statistics,
collapse, images, cost, per-cell, failures and reproduce sections. Does not own: which
sections a report has (report.py), a search's sections (search.py), the statistics
(stats.py) or how figures look (plots.py).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablate import timing
from ablate.analysis import figures, plots, protocol, stats, strata as strata_
from ablate.analysis.context import Context
from ablate.analysis.document import ci, fmt, upper, where
from ablate.nets.activations import pieces_of, spec_of
from ablate.nets.families import having
from ablate.study.metrics import METRICS, label
from ablate.study.schema import ARMS
from ablate.training.quality import QUALITY_SAMPLES


def grid_summary(ctx: Context) -> None:
    """A grid's summary: what finished, then for each stratum whether the answer changes along
    an axis, the ranking's head, the claims its tests allow, what more seeds would tell, the
    scale of a trivial model and which configurations had not converged."""
    doc, runs, metric = ctx.doc, ctx.runs, ctx.metric
    doc.heading("Summary")
    total = len(ctx.study.points()) * len(ctx.study.seeds) * (2 if ctx.study.protocol else 1)
    n_failed = int((runs["status"] == "failed").sum())
    apart = (f" Activations are compared only within a stratum (one {', one '.join(ctx.strata[0].key)}); "
             "no number is pooled across strata" + ("; across datasets only the ranks within each "
                                                    "dataset's blocks are combined (Across datasets)."
                                                    if ctx.transfers else ".") if ctx.stratified else "")
    doc.para(f"{len(runs)} of {total} members finished ({len(ctx.ok)} trained to the end, "
             f"{n_failed} failed). Metric: {label(metric)}, {METRICS[metric].better} is better, "
             f"{split_of(ctx, metric)}; intervals are 95% Student-t intervals over seeds (n "
             "shown); tests are paired over matched blocks (one block = one cell and seed, where "
             f"every activation saw the same data order and noise) at α = {stats.ALPHA:g}." + apart)
    failure_reasons(ctx)
    if ctx.study.protocol and (sentences := protocol.verdict_sentences(ctx)):
        doc.para(f"Does the verdict survive tuning? {' '.join(sentences)} (Both arms on the test split; "
                 "each activation was tuned on the validation split.)")
    for s in ctx.strata:
        if ctx.stratified:
            doc.heading(upper(s.label), 3)
        _stratum_summary(ctx, s)
    if ctx.transfers:
        doc.heading("Across datasets", 3)
    for t in ctx.transfers:
        doc.para(f"Does the verdict transfer across datasets{f' ({t.label})' if t.key else ''}? "
                 + t.sentence() + _collapsed_caution(ctx, t))
    if ctx.strata and all(s.comparison is None for s in ctx.strata) and len(ctx.ok):
        doc.para("Too few finished members for a statistical comparison (at least two "
                 "activations with two matched blocks are needed).")


def _stratum_summary(ctx: Context, s) -> None:
    doc, c = ctx.doc, s.comparison
    if s.interactions:  # the question the study exists for comes first
        doc.para("Does the answer change along the axes? " + " ".join(i.sentence() for i in s.interactions)
                 + "".join(f" {t}" for t in _trivial_slices(ctx, s)))
    if s.ranking is not None and len(s.ranking):
        doc.para(_head_sentence(ctx, s))
    if c is not None:
        doc.bullets([upper(t) for t in stats.claims(c)] + _power_sentences(s))
    if (scale := _scale_sentence(ctx, s)):
        doc.para(scale)
    if (late := _convergence_sentence(ctx, s)):
        doc.para(late)
    elif not s.runs["family"].isin(having("reconstruction")).any():
        doc.para("A GAN has no validation loss, so whether its training had settled is not "
                 "checked: see its generator and discriminator losses under Results.")


def _head_sentence(ctx: Context, s) -> str:
    """The ranking's first entry (and the baseline's), by the tests' statistic, mean beside it."""
    top = s.ranking.iloc[0]
    by = (f"best average rank over {s.comparison.n_blocks} matched blocks" if s.comparison is not None
          else f"{'highest' if s.maximize else 'lowest'} mean")
    text = (f"Ranked by {by}: {top['activation']}"
            + (f" (average rank {top['avg_rank']:.2f})" if np.isfinite(top["avg_rank"]) else "")
            + f", mean {ci(top)} (n = {int(top['n'])} seeds)")
    base = s.ranking[s.ranking["activation"] == ctx.baseline]
    if ctx.baseline and ctx.baseline != top["activation"] and len(base):
        b = base.iloc[0]
        text += (f"; the baseline {ctx.baseline}"
                 + (f" (average rank {b['avg_rank']:.2f})" if np.isfinite(b["avg_rank"]) else "")
                 + f", mean {ci(b)}")
    return text + "."


def _power_sentences(s) -> list[str]:
    """When the top two are not told apart: how many matched blocks (and seeds) it would take
    at their observed paired spread."""
    c = s.comparison
    if len(c.avg_ranks) < 2:
        return []
    a, b = c.avg_ranks.index[:2]
    row = c.versus[c.versus["activation"].isin([a, b])]
    if c.separable and len(c.top_group) == 1:
        return []
    if len(row) and (row["verdict"].isin(["better", "worse"])).any():
        return []
    need = stats.blocks_to_separate(c, a, b, c.alpha)
    if need is None:
        return [f"{a} and {b} score the same in every matched block."]
    cells = c.cells
    seeds = int(np.ceil(need / cells))
    return [f"Telling {a} and {b} apart at their observed paired spread would take about {need} "
            f"matched blocks for a single paired test (a t-test at 80% power), i.e. about {seeds} "
            f"seeds per cell over the {cells} cell{'s' if cells > 1 else ''} (now {c.n_blocks} "
            "blocks); against the baseline, with Holm over every activation, it may take more."]


TRIVIAL_SCALE = ("test_nll", "test_nelbo", "test_recon", "val_nll", "val_nelbo", "val_recon")
"""Metrics in nats per image on which a trivial model's NLL gives a scale."""


def _scale_sentence(ctx: Context, s) -> str | None:
    """The NLL of independent pixels at their training means beside the best mean."""
    value = _trivial_of(ctx, s)
    if value is None or s.ranking is None or not len(s.ranking):
        return None
    best = s.ranking.iloc[0]
    worse = s.ok[s.ok[s.metric] >= value - s.rope]
    text = (f"For scale: a trivial model, independent pixels at their training means, scores "
            f"{value:.2f} nats/image on the test split; the best here, {best['activation']}, "
            f"{best['mean']:.2f} ({value - best['mean']:.2f} nats better).")
    if len(worse):
        counts = worse.groupby("activation").size().sort_values(ascending=False)
        text += (f" {len(worse)} of {len(s.ok)} members score no better than it (within ±{s.rope:g}): "
                 + ", ".join(f"{a} {n}" for a, n in counts.items())
                 + " — they learned next to nothing, and where they rank says little.")
    if set(s.runs["likelihood"].dropna()) == {"bernoulli"} and not ctx.data(s).get("binary"):
        text += (" On grey-level images the Bernoulli likelihood is a cross-entropy whose floor "
                 "lies above 0: compare these numbers within ablate, not with published NLLs of "
                 "binarised data.")
    return text


def _trivial_of(ctx: Context, s) -> float | None:
    """The trivial model's NLL for the stratum's likelihood, when its metric is on that scale."""
    trivial = ctx.data(s).get("trivial_nll")
    if not isinstance(trivial, dict) or s.metric not in TRIVIAL_SCALE or "likelihood" not in s.runs:
        return None
    likelihoods = set(s.runs["likelihood"].dropna())
    return trivial.get(likelihoods.pop()) if len(likelihoods) == 1 else None


def _collapsed_caution(ctx: Context, t) -> str:
    """A transfer's caveat: the datasets whose blocks include slices where every model collapsed."""
    parts = [f"{s.key['dataset']} at {where(axis, value)}" for s in t.strata
             for axis, value, _, _ in collapsed_slices(ctx, s)]
    return (f" Read with care: no activation beats the trivial model on {'; '.join(parts)}, and "
            "those blocks, which rank failures, are part of these ranks." if parts else "")


def collapsed_slices(ctx: Context, s) -> list[tuple[str, object, float, pd.Series]]:
    """(axis, value, the trivial NLL, each activation's mean there) of every slice in which no
    activation beats the trivial model by more than the ROPE: its models collapsed."""
    trivial = _trivial_of(ctx, s)
    if trivial is None:
        return []
    out = []
    for axis, v, _ in s.slices:
        means = s.ok[s.ok[axis] == v].groupby("activation")[s.metric].mean()
        if len(means) and trivial - means.min() <= s.rope:
            out.append((axis, v, trivial, means))
    return out


def _trivial_slices(ctx: Context, s) -> list[str]:
    """The collapsed slices, as sentences: a ranking there compares failures."""
    return [f"At {where(axis, v)} no activation beats the trivial model (independent "
            f"pixels, {trivial:.2f} nats) by more than ±{s.rope:g} (best "
            f"{means.idxmin()}, {means.min():.2f}): every model there is as good as "
            "collapsed, its ranking compares failures, and the overall ranking below "
            "includes those blocks (read the Per slice table)."
            for axis, v, trivial, means in collapsed_slices(ctx, s)]


def _convergence_sentence(ctx: Context, s) -> str | None:
    """The configurations still improving at the last epoch, by activation."""
    keys = [k for k in s.cells if k in s.epochs]
    column = figures.curve_column(s.epochs) if not s.epochs.empty else None
    late = strata_.convergence(s, column, keys) if column else pd.DataFrame()
    if late.empty:
        return None
    cells = max(1, len(s.runs.drop_duplicates(keys)) if keys else 1)
    by_act = late.groupby("activation", sort=False)
    names = [f"{act} ({len(g)} of {cells} cell{'s' if cells > 1 else ''}"
             + (": " + "; ".join(", ".join(where(k, r[k]) for k in keys) for _, r in g.iterrows())
                if keys and len(g) <= 2 else "") + ")"
             for act, g in by_act]
    return (f"Not converged: {len(late)} configuration{'s' if len(late) > 1 else ''} still "
            f"improved their {label(column)} over the last quarter of training by more than "
            f"the seeds' spread — {', '.join(names)}. Train longer (train.epochs) before "
            "trusting the ranking of these.")


def failure_reasons(ctx: Context) -> None:
    """When no member trained to the end, say so and why: each distinct reason (epoch
    numbers aside) with how many members and which activations it stopped."""
    runs = ctx.runs
    if runs.empty or len(ctx.ok):
        return
    why = runs.assign(why=runs["reason"].fillna("").astype(str)
                      .str.replace(r"\d+", "N", regex=True).replace("", "no reason recorded"))
    items = [f"{n} member{'s' if n > 1 else ''} ({', '.join(sorted(set(g['activation'])))}): {reason}"
             for reason, g in why.groupby("why", sort=False) for n in [len(g)]]
    doc = ctx.doc
    doc.para(f"No member trained to the end: all {len(runs)} failed or were pruned, so there is "
             "nothing to rank. The reasons (N stands for an epoch or step number):")
    doc.bullets(sorted(items, key=lambda t: -int(t.split(" ", 1)[0])))


def split_of(ctx: Context, metric: str) -> str:
    """Which data a metric's numbers come from, as a clause of a sentence."""
    split = METRICS[metric].split
    if split not in ("test", "validation"):
        return "a cost, not a split's measurement" if split == "none" else f"on the {split} split"
    key = "n_test" if split == "test" else "n_val"
    records = {label: r for label, r in ctx.info.get("data", {}).items() if label in ctx.study.datasets}
    sizes = (", ".join(f"{label} {r.get(key, '?')}" for label, r in records.items())
             if len(records) > 1 else ctx.data().get(key, "?"))
    if split == "test":
        return f"measured once, at the end, on the test split ({sizes} images), which nothing chose by"
    return f"measured on the validation split ({sizes} images)"


def setup(ctx: Context) -> None:
    """Dataset sizes, device, seeds, wall time, package versions and the YAML as written."""
    doc, info, study = ctx.doc, ctx.info, ctx.study
    doc.heading("Setup")
    env, wall = info.get("environment", {}), info.get("wall_seconds")
    doc.para(" ".join(dataset_sentence(label, info.get("data", {}).get(label, {}), options)
                      for label, options in study.datasets.items())
             + f" {model_sentence(study)}{weights_sentence(ctx)} {training_sentence(study)} "
             f"Device: {info.get('device', '?')}. Seeds: {', '.join(map(str, study.seeds))}. "
             + (f"Wall time of the study: {wall / 60:.1f} min." if wall else ""))
    if (warning := design_warning(ctx)):
        doc.para(warning)
    if env:
        doc.table(pd.DataFrame({"component": list(env), "version": list(env.values())}))
    if not ctx.runs.empty and not own_modules(study):
        doc.para("The weight initialisation of each activation's hidden layers"
                 + (" in each arm" if ctx.study.protocol else "") + " (auto: the scheme the "
                 "activation needs, Kaiming for the ReLU family, LeCun for SELU, Xavier for "
                 "tanh and sigmoid; default: PyTorch's own nn.Linear, nn.Conv2d init):")
        doc.table(inits(ctx))
    if overrides := info.get("overrides"):
        doc.para("Values set on the command line over the study file's (the YAML below is "
                 "the file with them applied): " + ", ".join(f"`--set {o}`" for o in overrides) + ".")
    doc.code(study.source)


def dataset_sentence(label: str, data: dict, options: dict) -> str:
    """'Dataset sprites: 4608 training, 512 validation and 1024 test images of 1×32×32 = 1024
    pixels, with the ground-truth factors shape (3), scale (4), ….'"""
    val = f"{data['n_val']} validation and " if data.get("n_val") else "no validation and "
    shape = data.get("image_shape")
    pixels = f"{'×'.join(map(str, shape))} = {data.get('dim')}" if shape else data.get("dim", "?")
    called = label if label == options["name"] else f"{label} ({options['name']})"
    factors = data.get("factors") or {}
    return (f"Dataset {called}: {data.get('n_train', '?')} training, {val if 'n_val' in data else ''}"
            f"{data.get('n_test', '?')} test images of {pixels} pixels"
            + (", with the ground-truth factors " + ", ".join(f"{f} ({n})" for f, n in factors.items())
               if factors else "") + ".")


def design_warning(ctx: Context) -> str | None:
    """When a stratum's design cannot reach α against the baseline however large the
    differences: say so, and how many matched blocks (and seeds) it would need."""
    parts = []
    for s in ctx.strata:
        c = s.comparison
        if c is None or c.versus.empty or c.versus["decidable"].any():
            continue
        need = int(c.versus["needs_blocks"].iloc[0])
        cells = c.cells
        parts.append(f"{s.label + ': ' if s.key else ''}with {c.n_blocks} matched blocks and "
                     f"{len(c.versus)} comparisons against {c.baseline}, the smallest Holm-adjusted "
                     f"p an exact Wilcoxon test can reach is {c.versus['min_p'].min():.2g} > α = "
                     f"{c.alpha:g}, so no activation can be shown better or worse than the "
                     f"baseline; that needs ≥ {need} blocks (≥ {int(np.ceil(need / cells))} seeds "
                     f"over {cells} cell{'s' if cells > 1 else ''})")
    if not parts:
        return None
    return "Warning — the design cannot reach α. " + "; ".join(parts) + "."


def model_sentence(study) -> str:
    """The architecture in words: each arch the study trains, its layers, and the likelihood."""
    values = lambda key: study.space.get(key, (getattr(study.base, key),))  # noqa: E731
    sizes = lambda vs: " or ".join("[" + ", ".join(map(str, v)) + "]" for v in vs)  # noqa: E731
    families = "/".join(f.upper() for f in values("family"))
    if modules := own_modules(study):
        options = " or ".join(f"`{o}`" for o in values("options"))
        return (f"Model: {families}, the study's own module{'s' if len(modules) > 1 else ''} "
                + " and ".join(f"`{m}`" for m in modules) + f" with options {options}: its "
                "layers and weight init are the factory's; ablate hands the factory each member's "
                "activation and trains the members as vmapped stacks of the module "
                f"(torch.func); {'/'.join(values('likelihood'))} likelihood.")
    parts = []
    for arch in values("arch"):
        hidden = values("hidden")
        fc = ("no fully connected hidden layer" if hidden == ((),)
              else f"fully connected hidden layers {sizes(hidden)}")
        if arch == "conv":
            parts.append(f"conv (4×4 stride-2 convolutions with channels {sizes(values('channels'))}, "
                         f"{fc}, transposed convolutions back)")
        else:
            parts.append(f"mlp ({fc})")
    pooled = sorted({a for key in ("activation", "decoder_activation") for a in values(key)
                     if a and pieces_of(a) > 1})
    named = ", ".join(f"{a} (K = {pieces_of(a)})" for a in pooled)
    pooling = (f" With {named} the layer before each of its activations has K times the units or "
               "channels listed (K linear pieces per unit, the max kept)." if pooled else "")
    return (f"Model: {families}, {' and '.join(parts)}, "
            f"{'/'.join(values('likelihood'))} likelihood.{pooling}")


def weights_sentence(ctx: Context) -> str:
    """' Trainable weights per member: 19 465.' (a range when they differ)."""
    if ctx.runs.empty or "params" not in ctx.runs or ctx.runs["params"].isna().all():
        return ""
    low, high = int(ctx.runs["params"].min()), int(ctx.runs["params"].max())
    return f" Trainable weights per member: {low:,}" + (f" to {high:,}." if high > low else ".")


def training_sentence(study) -> str:
    """How every member trains: optimiser, lr, batch, epochs, KL warm-up — and that these are
    the same for every activation unless a search or the tuned protocol chooses them."""
    def shown(key: str) -> str:
        if key in study.ranges:
            r = study.ranges[key]
            return f"searched in [{r.low:g}, {r.high:g}]"
        tuned = study.protocol is not None and key in study.protocol.keys
        values = " or ".join(f"{v:g}" for v in study.space.get(key, (getattr(study.base, key),)))
        return values + (" (tuned per activation in the tuned arm)" if tuned else "")
    warm = shown("kl_warmup_epochs")
    same = "" if study.ranges or study.protocol else "; the same values for every activation, none tuned for it"
    dtypes = study.space.get("dtype", (study.base.dtype,))
    autocast = ("" if dtypes == ("fp32",) else
                f", matmuls and convolutions in {' or '.join(dtypes)} (autocast; weights, losses, Adam "
                "and evaluation in fp32)")
    return (f"Training: Adam at lr {shown('lr')}, batch {shown('batch_size')}, {shown('epochs')} "
            f"epochs{'' if warm == '0' else f', KL warm-up over {warm} epochs'}{autocast}{same}.")


def own_modules(study) -> tuple[str, ...]:
    """The users' modules (model.module) the study trains; () for the built-in model."""
    return tuple(m for m in study.space.get("module", (study.base.module,)) if m)


def inits(ctx: Context) -> pd.DataFrame:
    """The weight init each activation's hidden layers got, per arm (auto resolved to the
    activation's own scheme)."""
    def resolved(act: str, init: str) -> str:
        if init != "auto":
            return init
        schemes = [spec.init if (spec := spec_of(a)) else "the plugin's own"
                   for a in act.split("→")]  # an encoder→decoder pair: each side its own
        return f"auto ({' → '.join(schemes)})"

    arms = ARMS if "arm" in ctx.runs.columns else (None,)
    out = {"activation": ctx.order or sorted(set(ctx.runs["activation"]))}
    for arm in arms:
        part = ctx.runs if arm is None else ctx.runs[ctx.runs["arm"] == arm]
        used = part.groupby("activation")["init"].agg(lambda s: sorted(set(s)))
        out["init" if arm is None else f"{arm}: init"] = [
            ", ".join(resolved(a, i) for i in used.get(a, [])) or "–" for a in out["activation"]]
    return pd.DataFrame(out)


def slug(s) -> str:
    """A stratum's suffix for figure file names: '' for a study's only stratum."""
    return "".join(f"_{k}-{v}" for k, v in s.key.items()) if s.key else ""


def each_stratum(ctx: Context, strata=None):
    """The strata a section speaks of (`strata`: those it has something to say about; default
    every one), each under its own heading when the study has several."""
    for s in ctx.strata if strata is None else strata:
        if ctx.stratified:
            ctx.doc.heading(upper(s.label), 3)
        yield s


def results(ctx: Context) -> None:
    """Per stratum: the ranking table and the figures of the metric across its axes."""
    if not any(s.ranking is not None for s in ctx.strata):
        return
    doc, metric = ctx.doc, ctx.metric
    doc.heading("Results")
    doc.para("Each activation's metric averaged over the cells of its stratum, then mean and 95% "
             "Student-t interval over seeds (n seeds); rank and avg_rank are the tests' ranking, "
             "the average rank within matched blocks (1 = best). Beside the score, what it cost: "
             "params, each member's trainable values (its activation's own included), and "
             "FLOPs/example, its forward pass over one example — encoding an image and decoding a "
             "code, two FLOPs per multiply-add of its layers; a range where its cells differ.")
    for s in each_stratum(ctx):
        if s.ranking is None:
            continue
        view = s.ranking.assign(**{metric: s.ranking.apply(ci, axis=1),
                                   "avg_rank": s.ranking["avg_rank"].map(lambda v: fmt(v, 2))})
        cap = capacity(s.runs)
        view = view.merge(cap, on="activation", how="left") if not cap.empty else view
        doc.table(view[["rank", "activation", metric, "n", "avg_rank", "failed",
                        *cap.columns[1:3]]].rename(columns={"n": "seeds"}))
        if sentence := capacity_sentence(cap, ctx.baseline, list(s.ranking["activation"])):
            doc.para(sentence)
        _stratum_figures(ctx, s)


CAPACITY_RATIO = 1.02
"""An activation with this many times the baseline's parameters or FLOPs gets a capacity caution."""


def capacity(runs: pd.DataFrame) -> pd.DataFrame:
    """Per activation: its members' parameter count and forward FLOPs per example as the table
    shows them (a range over its cells where they differ), and the medians `params_n`,
    `flops_n`. Empty when the runs predate the FLOPs column."""
    if runs.empty or "flops" not in runs or runs["flops"].isna().all():
        return pd.DataFrame()

    def shown(v: pd.Series, number) -> str:
        low, high = number(v.min()), number(v.max())
        return low if low == high else f"{low}–{high}"

    g = runs.groupby("activation", sort=False)
    return pd.DataFrame({"activation": list(g.groups),
                         "params": [shown(v, lambda x: f"{int(x):,}") for _, v in g["params"]],
                         "FLOPs/example": [shown(v, _si) for _, v in g["flops"]],
                         "params_n": g["params"].median().to_numpy(),
                         "flops_n": g["flops"].median().to_numpy()})


def _si(x: float) -> str:
    """A count in three significant digits with its SI prefix: 67 200 → '67.2 k'."""
    for scale, prefix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if x >= scale:
            return f"{x / scale:.3g}{prefix}"
    return f"{x:.3g}"


def capacity_sentence(cap: pd.DataFrame, baseline: str | None, order: list[str] | None = None) -> str:
    """Names the activations with CAPACITY_RATIO × the baseline's (else the smallest) median
    parameters or FLOPs — a win of theirs may be capacity, not the nonlinearity — and, given
    the ranking `order`, where they rank beside the best activation no bigger than the baseline."""
    if cap.empty:
        return ""
    by = cap.set_index("activation")
    ref = baseline if baseline in by.index else by["params_n"].idxmin()
    ratio = by[["params_n", "flops_n"]] / by.loc[ref, ["params_n", "flops_n"]]
    big = [a for a in by.index if a != ref and ratio.loc[a].max() >= CAPACITY_RATIO]
    if not big:
        return ""
    named = "; ".join(f"{a} ({ratio.at[a, 'params_n']:.2f}× the parameters, {ratio.at[a, 'flops_n']:.2f}× "
                      "the FLOPs)" for a in big)
    text = f"Not a comparison at equal capacity: against {ref}, {named}."
    ranked = [a for a in (order or []) if a in by.index]
    small = [a for a in ranked if a not in big]
    if ranked and small:
        place = ", ".join(f"{a} {ranked.index(a) + 1}" for a in big if a in ranked)
        text += (f" They rank {place} of {len(ranked)}; the best activation no bigger than {ref}, "
                 f"{small[0]}, ranks {ranked.index(small[0]) + 1} (whether ranks differ at all: see "
                 "Statistics).")
    return (text + " A larger model can win by its size rather than its nonlinearity (as \"KAN or "
            "MLP: a fairer comparison\" found); to credit the activation, compare at equal "
            "parameters — narrower hidden layers for it, e.g. space.hidden. FLOPs count the layers' "
            "multiply-adds; an activation's own elementwise work is in Cost.")


def _stratum_figures(ctx: Context, s) -> None:
    figs, metric, order, tag = ctx.fig_dir, ctx.metric, s.order, slug(s)
    axes = figures.varied(s.runs, s.cells)
    panel = "latent_dim" if "latent_dim" in axes else None
    hue = next((a for a in axes if a != panel), None)
    ctx.figure(plots.boxes(s.runs, metric, order, figs / f"ranking{tag}.png", panel=panel, hue=hue),
               f"{label(metric)} of every member{_of(s)} (a box over its cells and seeds"
               + (f", points coloured by {hue}" if hue else "") + "), activations in ranking order"
               + (f", one panel per {panel}." if panel else "."))
    if axes:
        cols, facet = axes[0], (axes[1] if len(axes) > 1 else None)
        ctx.figure(plots.heatmaps(s.runs, metric, order, figs / f"heatmap{tag}.png", cols, facet),
                   f"Mean {label(metric)}{_of(s)} per activation and {cols}"
                   + (f", one panel per {facet}." if facet else "."))
    if not s.epochs.empty:
        columns = figures.curve_columns(s.epochs)
        ctx.figure(plots.curves(s.epochs, order, figs / f"curves{tag}.png"),
                   f"{' and '.join(upper(label(c)) for c in columns)}{_of(s)} per epoch, mean over "
                   "cells and seeds with a 95% CI band.")
    if s.runs["test_kl"].notna().any():
        ctx.figure(plots.rate_distortion(s.runs, order, figs / f"rate_distortion{tag}.png"),
                   "Rate–distortion plane (Alemi et al. 2018): mean test KL (rate) against mean "
                   "test reconstruction (distortion)"
                   + (" per kl_weight" if s.runs["kl_weight"].nunique() > 1 else "")
                   + ". Models on one dotted line have equal −ELBO but trade rate for distortion "
                   "differently.")


def _of(s) -> str:
    return f" ({s.label})" if s.key else ""


def statistics(ctx: Context) -> None:
    """Per stratum: Friedman and CD diagram; each activation against the baseline (paired
    difference, exact Wilcoxon–Holm, what the design can reach, Bayesian probabilities); each
    slice; and whether the ranking changes along each axis."""
    if not any(s.comparison is not None for s in ctx.strata):
        return
    ctx.doc.heading("Statistics")
    for s in each_stratum(ctx):
        if s.comparison is not None:
            _stratum_statistics(ctx, s)


def _stratum_statistics(ctx: Context, s) -> None:
    c, doc, tag = s.comparison, ctx.doc, slug(s)
    if len(c.avg_ranks) >= 3:
        power = ("" if c.friedman_decidable else
                 f" With {c.n_blocks} blocks the smallest p this test can reach is "
                 f"{c.friedman_min_p:.2g}, above α: it cannot separate anything.")
        doc.para(f"Friedman test over {c.n_blocks} matched blocks and {len(c.avg_ranks)} "
                 f"activations: χ² = {c.friedman_stat:.1f}, {stats.p_text(c.friedman_p, c.friedman_min_p)} (by permutation "
                 "of each block's ranks, 10 000 times; the χ² approximation is poor with few "
                 "blocks). Nemenyi "
                 f"critical difference of average ranks: {c.cd:.2f}. Top group (not separable "
                 f"from the best): {', '.join(c.top_group)}." + power)
        ctx.figure(plots.cd_diagram(c, ctx.fig_dir / f"cd_diagram{tag}.png"),
                   f"Critical difference diagram{_of(s)}: average ranks over matched blocks; a bar "
                   "joins activations whose ranks differ by less than the Nemenyi CD.")
    if not c.versus.empty:
        doc.para(f"Each activation against the baseline {ctx.baseline}: diff is the mean over "
                 f"matched blocks of (activation − {ctx.baseline}) in {label(ctx.metric)} with its "
                 "95% t-interval; p is the exact Wilcoxon signed-rank test, p_holm Holm-corrected "
                 "across activations, and min_p the smallest p_holm these blocks can reach (when "
                 "it exceeds α the verdict is \"cannot tell\", never \"no difference\"). "
                 f"P(better / equivalent / worse) are the Bayesian signed-rank test's (Benavoli "
                 f"et al. 2017) with a region of practical equivalence of ±{s.rope:g}.")
        doc.table(versus_view(c.versus))
    _slices(ctx, s)


def versus_view(v: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "activation": v["activation"], "blocks": v["n_blocks"],
        "diff [95% CI]": [f"{fmt(d, 3)} [{fmt(lo, 3)}, {fmt(hi, 3)}]"
                          for d, lo, hi in zip(v["diff"], v["diff_low"], v["diff_high"])],
        "p": v["p"].map(lambda x: f"{x:.2g}"), "p_holm": v["p_holm"].map(lambda x: f"{x:.2g}"),
        "min_p": v["min_p"].map(lambda x: f"{x:.2g}"),
        "P(better / equiv. / worse)": [f"{b:.2f} / {e:.2f} / {w:.2f}" for b, e, w in
                                       zip(v["p_better"], v["p_equivalent"], v["p_worse"])],
        "verdict": v["verdict"]})


def _slices(ctx: Context, s) -> None:
    """Each slice's tests side by side, then the interaction of each axis with its figure."""
    if not s.slices:
        return
    ctx.doc.heading(f"Per slice{_of(s)}", 4 if ctx.stratified else 3)
    ctx.doc.table(pd.DataFrame([_axis_row(ctx.baseline, axis, val, c) for axis, val, c in s.slices]))
    for i in s.interactions:
        ctx.doc.para(i.sentence() + f" The test permutes the {i.axis} labels of the matched blocks "
                     f"within each of the {i.n_groups} groups that share every other cell and the "
                     "seed, and compares the spread of the slices' mean rank profiles.")
        data = figures.interaction_data([(v, c.avg_ranks) for a, v, c in s.slices if a == i.axis])
        ctx.figure(plots.interaction(data, i.axis, s.order, f"Average rank per {i.axis}{_of(s)}: "
                                     "crossing lines mean the best activation changes",
                                     ctx.fig_dir / f"interaction_{i.axis}{slug(s)}.png"),
                   f"Average rank of each activation within the matched blocks of each {i.axis} "
                   f"(interaction p = {i.p:.2g}).")


def _axis_row(baseline: str | None, axis: str, value, c: stats.Comparison) -> dict:
    def verdicts(kind: str) -> str:
        names = [] if c.versus.empty else list(c.versus.loc[c.versus["verdict"].str.startswith(kind), "activation"])
        return ", ".join(names) or "–"

    friedman = (f"{c.friedman_p:.2g}" if math.isfinite(c.friedman_p) else "–") + \
        ("" if c.friedman_decidable or not math.isfinite(c.friedman_p) else " (cannot reach α)")
    return {"slice": where(axis, value), "blocks": c.n_blocks, "friedman_p": friedman,
            "best (avg rank)": f"{c.avg_ranks.index[0]} ({c.avg_ranks.iloc[0]:.2f})",
            "top group": ", ".join(c.top_group) if c.separable else "not separable",
            f"better than {baseline}": verdicts("better"), f"worse than {baseline}": verdicts("worse"),
            "cannot tell": verdicts("cannot tell")}


QUALITY = ("fid", "kid", "precision", "recall", "class_coverage")


def sample_quality(ctx: Context) -> None:
    """FID, KID, precision / recall and class coverage of each activation's samples, in the
    feature space of the dataset's classifier, per stratum of a generative family."""
    runs = ctx.ok
    if runs.empty or not (runs["family"].isin(METRICS["fid"].families)).any():
        return
    doc = ctx.doc
    doc.heading("Sample quality")
    judges = {label: f"{j['test_accuracy']:.1%} on the {j['classes']} classes of {label}"
              for label, j in ctx.info.get("classifier", {}).items()}
    if not judges or "fid" not in runs or runs["fid"].isna().all():
        doc.para("The dataset has no labels, so there is no classifier to measure samples with: "
                 "the fid, kid, precision, recall and class_coverage columns are empty.")
        return
    doc.para(f"Samples (a VAE's decoded means of prior draws, a GAN's generator outputs) against the test images, up to {QUALITY_SAMPLES} of each for every "
             "member, in the penultimate features of a classifier trained once on each dataset's training "
             f"split (test accuracy {'; '.join(judges.values())})."
             + ("" if len(judges) == len(ctx.study.datasets) else " A dataset without labels has no "
                "classifier and no sample quality.") + " FID "
             "and KID (unbiased, cubic kernel, ×10³ as papers report it): lower is better; FID depends on the sample count, "
             "and every member here is scored at the same count. Precision and recall (k = 3, "
             "Kynkäänniemi et al. 2019): the share of samples on the data's manifold and of data "
             "on the samples'; class coverage: the share of classes found among the samples "
             "(1/classes for a collapsed generator). Mean and 95% CI over seeds of each "
             "activation's mean over cells.")
    sampled = [s for s in ctx.strata if s.ok["family"].isin(METRICS["fid"].families).any()]
    for s in each_stratum(ctx, sampled):  # an autoencoder's stratum has no samples: no heading
        part = s.ok[s.ok["family"].isin(METRICS["fid"].families)]
        doc.table(activation_cis(part, QUALITY, [a for a in s.order if a in set(part["activation"])]))


def activation_cis(runs: pd.DataFrame, metrics, order: list[str]) -> pd.DataFrame:
    """One row per activation in `order`: each metric's mean and 95% CI over seeds of the
    activation's mean over cells (the ranking's numbers, `stats.ranking`); – without any."""
    table = {"activation": order}
    for metric in metrics:
        r = stats.ranking(runs, metric, METRICS[metric].higher_is_better).set_index("activation")
        table[metric] = [ci(r.loc[a]) if a in r.index and r.loc[a, "n"] > 0 else "–" for a in order]
    return pd.DataFrame(table)


def collapse(ctx: Context) -> None:
    """Per stratum of a family with a code: active units and I(x; z) against kl_weight, KL per
    latent dimension (VAEs), dead units and divergence, with a table of them per activation."""
    coded = [s for s in ctx.strata if s.runs["family"].isin(having("reconstruction")).any()]  # a GAN has no code
    if not coded:
        return
    ctx.doc.heading("Posterior collapse and dead units")
    for s in coded:
        if ctx.stratified:
            ctx.doc.heading(upper(s.label), 3)
        _collapse(ctx, s)


def _collapse(ctx: Context, s) -> None:
    doc, runs, order, figs, tag = ctx.doc, s.runs, s.order, ctx.fig_dir, slug(s)
    grid = ctx.study.search.is_grid  # a search's members sit at scattered kl_weights and sizes
    vae = runs["test_kl"].notna().any()
    if grid and vae and runs["active_units"].notna().any() and runs["mutual_info"].notna().any():
        ctx.figure(plots.collapse(runs, order, figs / f"collapse{tag}.png"),
                   f"Active units (Var_x E[z_d|x] ≥ 0.01) and mutual information I(x; z){_of(s)} "
                   + ("against kl_weight" if runs["kl_weight"].nunique() > 1 else "per activation")
                   + " and latent size; fewer active units and less information = collapse.")
    if vae and "kl_per_dim" in runs.columns:
        ctx.figure(plots.kl_per_dim(runs, ctx.metric, ctx.maximize, order, figs / f"kl_per_dim{tag}.png",
                                    by_latent=grid),
                   "KL of each latent dimension, sorted, for the best member of each "
                   "activation; dimensions under the dotted line (0.01 nats) carry almost "
                   "nothing.")
    health = figures.health_data(runs)
    ctx.figure(plots.health(health, order, figs / f"dead_units{tag}.png"),
               f"Fraction of hidden units that are constant over the test set (dead; in a conv "
               f"layer a unit is a channel, constant over every image and position){_of(s)}, and "
               "share of members that diverged, per activation.")
    h = health.set_index("activation").reindex(order).reset_index()
    au = stats.summarize(runs, "active_units", ["activation"]).set_index("activation")
    mi = stats.summarize(runs, "mutual_info", ["activation"]).set_index("activation")
    cis = lambda t, a: ci(t.loc[a]) if a in t.index and np.isfinite(t.loc[a, "mean"]) else "–"  # noqa: E731
    doc.table(pd.DataFrame({
        "activation": h["activation"],
        "active_units": [cis(au, a) for a in h["activation"]],
        **({"mutual_info": [cis(mi, a) for a in h["activation"]]} if vae else {}),
        "dead_units": [fmt(x, 3) for x in h["dead_units"]],
        "diverged": [f"{d}/{m}" for d, m in zip(h["diverged"], h["members"])]}))


def images(ctx: Context) -> None:
    """Per stratum of an autoencoder family: reconstructions, prior samples (a VAE's) and
    (latent_dim 2) the latent manifold of each activation's best seed in the best cell. A
    GAN's samples are its own section's (families.gans)."""
    samples = ctx.out_dir / "samples"
    coded = [s for s in ctx.strata if s.ranking is not None and ctx.data(s).get("image_shape")
             and s.runs["family"].isin(having("reconstruction")).any()]
    if not coded or not samples.exists():
        return
    ctx.doc.heading("Images")
    for s in coded:
        if ctx.stratified:
            ctx.doc.heading(upper(s.label), 3)
        _images(ctx, s, tuple(ctx.data(s)["image_shape"]), samples)


def _images(ctx: Context, s, shape: tuple, samples) -> None:
    order, figs, tag, runs = s.order, ctx.fig_dir, slug(s), s.runs
    cell, members = figures.showcase_members(runs, ctx.metric, ctx.maximize, s.cells)
    at = ", ".join(where(k, v) for k, v in cell.items()) or "each activation's best configuration"
    rows = figures.image_rows(samples, members, "recon", order)
    originals = figures.originals(samples, ctx.data(s)["label"])
    if rows and originals is not None:
        ctx.figure(plots.image_table(rows, shape, f"Reconstructions at {at}",
                                     figs / f"reconstructions{tag}.png", originals),
                   f"Reconstructions (decoded posterior mean) of the first test images "
                   f"by each activation's best seed at {at}, chosen on the "
                   f"{label(figures.chosen_by(runs, ctx.metric))}; top row: the originals.")
    rows = figures.image_rows(samples, members, "prior", order) if runs["test_kl"].notna().any() else []
    if rows:
        ctx.figure(plots.image_table(rows, shape, f"VAE prior samples at {at}", figs / f"samples{tag}.png"),
                   "Decoded means of draws z ~ N(0, I) from the VAE's prior, same members.")
    if 2 in set(runs["latent_dim"]) and runs["test_kl"].notna().any():
        cell2, members2 = figures.showcase_members(runs[runs["latent_dim"] == 2], ctx.metric,
                                                 ctx.maximize, s.cells)
        rows = figures.image_rows(samples, members2, "manifold", order)
        if rows:
            at2 = (", ".join(where(k, v) for k, v in cell2.items())
                   or "latent_dim = 2, each activation's best configuration")
            side = figures.manifold_side(rows)
            ctx.figure(plots.manifolds(rows, shape, f"Latent manifolds at {at2}", figs / f"manifold{tag}.png"),
                       f"Decoded latent manifold of each activation's best seed at {at2}: z on a "
                       f"{side}×{side} grid of the prior's 5%–95% quantiles.")


def cost(ctx: Context) -> None:
    """The cohorts' wall time and size, and the measured cost of each activation itself."""
    if ctx.cost is None:
        return
    doc, act_ns, wall = ctx.doc, ctx.info.get("activation_cost", {}), ctx.info.get("wall_seconds")
    doc.heading("Cost")
    doc.para("Members of a cohort train together, one batched model, so wall time belongs to a "
             "cohort, not to a member or an activation (under the tuned protocol a cohort's "
             "members count its tuning trials too)."
             + (f" The study took {wall:.0f} s of wall time." if wall else "")
             + (" The tuning trials of the protocol are in tuning.csv." if not ctx.tuning.empty else ""))
    if account := ctx.info.get("time"):
        doc.para("Where that time went, phase by phase (summed over the study's runs and workers; "
                 "building this report is not in it, and `ablate run` prints it with the rest):")
        doc.table(pd.DataFrame([{"phase": f"– {name.strip()}" if name.startswith(" ") else name,
                                 "seconds": fmt(seconds, 1),
                                 "share of the wall time": "" if share is None else f"{share:.0%}"}
                                for name, seconds, share in timing.breakdown(account, wall)]))
    cohorts = cohort_table(ctx.runs)
    if not cohorts.empty:
        doc.table(cohorts)
    if act_ns:
        doc.para("What differs between activations is the activation itself, measured before "
                 "training on the training device the same way in every study: forward + "
                 "backward of a fixed-size stacked tensor, repeated, one CPU thread on a CPU; "
                 "the median over the samples and its 25th–75th percentiles.")
        ctx.figure(plots.cost(ctx.cost, ctx.order, ctx.fig_dir / "cost.png"),
                   "Forward + backward time of each activation per element: median and its "
                   "25th–75th percentile over repeated samples.")
        c = ctx.cost.set_index("activation").reindex(ctx.order).reset_index()
        base = c.set_index("activation")["ns_per_element"].get(ctx.baseline, np.nan)
        doc.table(pd.DataFrame({"activation": c["activation"],
                                "ns/element (median)": [fmt(v, 2) for v in c["ns_per_element"]],
                                "25th–75th percentile": [f"{fmt(a, 2)}–{fmt(b, 2)}"
                                                         for a, b in zip(c["q25"], c["q75"])],
                                **({f"× {ctx.baseline}": [fmt(v / base, 2) for v in c["ns_per_element"]]}
                                   if ctx.baseline else {})}))
        if ctx.baseline:
            doc.para(f"The ratio to {ctx.baseline} is steadier than the absolute time: a busy "
                     "machine slows every activation alike.")


def cohort_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cohort: its members, their activations and its wall time (stores written
    before cohorts were recorded have none)."""
    if "cohort" not in runs or runs["cohort"].isna().all():
        return pd.DataFrame()
    rows = [{"cohort": k, "members": int(g["cohort_members"].iloc[0]),
             "activations": len(set(g["activation"])), "wall seconds": fmt(float(g["cohort_seconds"].iloc[0]), 1)}
            for k, g in runs.dropna(subset=["cohort"]).groupby("cohort", sort=False)]
    return pd.DataFrame(rows)


def per_cell(ctx: Context) -> None:
    """Mean [CI] of the metric for every cell and activation, with the trial that trained it
    (the number `ablate export` and `ablate sample` take)."""
    if not any(s.ranking is not None for s in ctx.strata):
        return
    cells, metric = ctx.cells, ctx.metric
    ctx.doc.heading("Per cell")
    ctx.doc.para("Each row is one configuration; `trial` is the number `ablate export` and `ablate sample` "
                 "take (with a seed) to give you that trained model.")
    table = stats.summarize(ctx.runs, metric, [*cells, "activation"])
    table = table[table["n"] > 0]
    table = table.sort_values([*cells, "mean"], ascending=[True] * len(cells) + [not ctx.maximize])
    trials = ctx.runs.groupby([*cells, "activation"], dropna=False)["trial"].agg(
        lambda t: ", ".join(map(str, sorted(set(int(v) for v in t))))).rename("trial")
    table = table.join(trials, on=[*cells, "activation"])
    view = table.assign(**{metric: table.apply(ci, axis=1)})[[*cells, "activation", "trial", metric, "n"]]
    ctx.doc.table(view.rename(columns={"n": "seeds"}))


def failures(ctx: Context) -> None:
    """Every member that failed: when and why."""
    ctx.doc.heading("Failures")
    failed = ctx.runs[ctx.runs["status"] == "failed"]
    if failed.empty:
        ctx.doc.para("No member failed." + ("" if ctx.study.search.is_grid else
                                            " Pruned members are counted in the Search section."))
        return
    keys = [k for k in [*ctx.study.space, *ctx.study.ranges] if k != "activation"]
    ctx.doc.table(failed[["trial", "activation", *keys, "seed", "status", "fail_epoch", "reason"]].assign(
        fail_epoch=lambda f: f["fail_epoch"].map(lambda v: "–" if pd.isna(v) else int(v))))


def reproduce(ctx: Context) -> None:
    ctx.doc.heading("Reproduce")
    ctx.doc.para(f"make study STUDY={ctx.study.path}   (or: ablate run {ctx.study.path}); "
                 f"ablate report {ctx.out_dir} rebuilds this report from the store without training.")
