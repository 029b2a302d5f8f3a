"""The report's sections on what surrounds the activation: the autoencoder family, the
decoder's own activation, dropout, the shapes learnable activations learn, and how their
gradients flow. Torch-free.

Owns: the cross-family comparison (each family's activation ranking on test reconstruction,
the one metric every family has, and Kendall's τ between the families' rankings), the
encoder × decoder heatmap, the train / validation gap per dropout value, the learned-shape
figure, and gradient flow (per layer over training, and which activations' gradients vanished
or exploded); the data of each (`*_data`, tested) apart from its drawing (plots.py).
Does not own: the statistics (stats.py) or the page (document.py).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ablate.analysis import figures, plots, sections, stats
from ablate.analysis.document import ci, fmt
from ablate.analysis.tables import write_csv
from ablate.study.metrics import ZERO_GRAD
from ablate.nets.activations import DECODER_LAYERS, SHAPE_GRID, pieces_of
from ablate.nets.families import FAMILY, having
from ablate.study.metrics import METRICS, label

SAMPLES_ONLY = having("samples") - having("reconstruction")
"""The families judged by their samples alone (a GAN: no encoder, so no reconstruction)."""

SHARED = "test_recon"
"""What every family is compared on: reconstruction (the VAE's and the autoencoders' alike)."""


def family_comparisons(runs: pd.DataFrame, cells: list[str], baseline: str | None) -> dict:
    """Each family's own comparison of activations on SHARED over its matched blocks."""
    others = [c for c in cells if c != "family"]
    out = {}
    for family, part in runs.groupby("family", sort=False):
        axes = [c for c in others if part[c].notna().any()]  # kl_weight is empty for an ae
        c = stats.compare(part, SHARED, axes, False, baseline) if part[SHARED].notna().any() else None
        if c is not None:
            out[family] = c
    return out


def family_tau(comparisons: dict) -> pd.DataFrame:
    """Kendall's τ between every two families' average ranks of the activations both have."""
    from scipy.stats import kendalltau

    names = list(comparisons)
    tau = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for a, b in itertools.combinations(names, 2):
        ra, rb = comparisons[a].avg_ranks, comparisons[b].avg_ranks
        common = [x for x in ra.index if x in rb.index]
        value = float(kendalltau(ra[common], rb[common]).statistic) if len(common) > 1 else float("nan")
        tau.loc[a, b] = tau.loc[b, a] = value
    return tau


def cross_family(ctx) -> None:
    """Does the best activation depend on the kind of autoencoder?"""
    runs = ctx.ok
    if "family" not in runs or runs["family"].nunique() < 2:
        return
    doc = ctx.doc
    doc.heading("Across families" + ctx.scope)
    per_seed = runs.groupby(["family", "activation", "seed"], as_index=False)[SHARED].mean()
    means = stats.summarize(per_seed.assign(status="ok"), SHARED, ["family", "activation"])
    means = means[means["n"] > 0]  # a GAN reconstructs nothing
    table = means.assign(v=means.apply(ci, axis=1)).pivot(index="activation", columns="family", values="v")
    comparisons = family_comparisons(ctx.runs, ctx.cells, ctx.baseline)
    order = [a for a in ctx.order if a in table.index]
    doc.para(f"Every autoencoder family on the metric they share, {label(SHARED)} (lower is better): each "
             "activation's mean over the family's cells, then mean and 95% CI over seeds. The "
             "tests rank the activations within each family's own matched blocks.")
    doc.table(table.reindex(order).reset_index())
    doc.bullets([s for f, c in comparisons.items() for s in stats.claims(c, f"{f.upper()}")[:1]])
    generative = runs[runs["fid"].notna()] if "fid" in runs else runs.iloc[:0]
    if generative["family"].nunique() > 1:
        per_seed = generative.groupby(["family", "activation", "seed"], as_index=False)["fid"].mean()
        fid = stats.summarize(per_seed.assign(status="ok"), "fid", ["family", "activation"])
        doc.para("The generative families on sample quality: FID of each activation's samples "
                 "(lower is better), mean and 95% CI over seeds.")
        doc.table(fid.assign(v=fid.apply(ci, axis=1)).pivot(index="activation", columns="family", values="v")
                  .reindex([a for a in order if a in set(fid["activation"])]).reset_index())
    if len(comparisons) > 1:
        tau = family_tau(comparisons)
        doc.para("Kendall's τ between the families' activation rankings (average ranks): 1 = the "
                 "same order, 0 = unrelated, −1 = reversed.")
        doc.table(tau.map(lambda v: fmt(v, 2)).reset_index(names="family"))
        off = tau.values[np.triu_indices(len(tau), 1)]
        bests = {f: c.avg_ranks.index[0] for f, c in comparisons.items()}
        same = len(set(bests.values())) == 1
        doc.para(f"Mean τ over family pairs: {fmt(float(np.nanmean(off)), 2)}. Best-ranked "
                 f"activation per family: {', '.join(f'{f.upper()} {a}' for f, a in bests.items())}"
                 + (" — the same in every family." if same else
                    " — it depends on the family (see each family's top group above for what "
                    "the tests can separate)."))


def gans(ctx) -> None:
    """The GAN members: generated samples per activation, the FID ranking with the paired
    tests, precision / recall, coverage and divergence per activation."""
    runs = ctx.runs[ctx.runs["family"].isin(SAMPLES_ONLY)]
    if runs.empty or "fid" not in runs or runs["fid"].isna().all():
        return
    doc = ctx.doc
    doc.heading("GANs" + ctx.scope)
    cells = [c for c in ctx.cells if c != "family" and runs[c].notna().any()]
    own = ctx.stratum(family=runs["family"].iloc[0]) if ctx.stratified else (ctx.strata[0] if ctx.strata else None)
    ranked = own is not None and own.metric == "fid" and own.comparison is not None
    c = own.comparison if ranked else stats.compare(runs, "fid", cells, False, ctx.baseline,
                                                    rope=METRICS["fid"].rope)
    doc.para("Each GAN (a generator and a discriminator; non-saturating loss, Adam β1 = 0.5, "
             "one discriminator step per generator step) judged by its generator's samples: FID against the test images in the classifier's "
             "features (lower is better; every member at the same sample count), precision and "
             "recall, and the share of classes its samples cover (mode collapse: 1/classes).")
    if c is not None and not ranked:  # ranked by FID, the Statistics section has these tests
        doc.bullets(stats.claims(c, "GAN FID"))
    order = [a for a in (list(c.avg_ranks.index) if c is not None else ctx.order) if a in set(runs["activation"])]
    table = sections.activation_cis(runs, ("fid", "precision", "recall", "class_coverage"), order)
    failed = runs.groupby("activation")["status"].agg(lambda s: f"{(s == 'failed').sum()}/{len(s)}")
    table["diverged"] = [failed.get(a, "–") for a in order]
    doc.table(table)
    shape = ctx.data().get("image_shape")
    cell, members = figures.showcase_members(runs, "fid", False, cells)
    samples = figures.image_rows(ctx.out_dir / "samples", members, "prior", order)
    if shape and samples:
        at = ", ".join(f"{k} = {v}" for k, v in cell.items()) or "each activation's best configuration"
        ctx.figure(plots.image_table(samples, tuple(shape), f"GAN generator samples at {at}",
                                     ctx.fig_dir / f"gan_samples{ctx.tag}.png"),
                   f"The generator's images (fixed noise) of each activation's best seed at {at}, "
                   f"chosen on the {label(figures.chosen_by(runs, 'fid'))}.")


def encoder_decoder(ctx) -> None:
    """With decoder_activation an axis: the metric per encoder × decoder activation."""
    if "decoder" not in ctx.runs:
        return
    data = encoder_decoder_data(ctx.runs, ctx.metric)
    ctx.doc.heading("Encoder × decoder activations" + ctx.scope)
    ctx.figure(plots.pair_heatmap(data, ctx.metric, ctx.fig_dir / f"encoder_decoder{ctx.tag}.png"),
               f"Mean {label(ctx.metric)} over cells and seeds for each encoder (rows) and decoder "
               "(columns) activation. The statistics above compare the pairs (enc→dec) as "
               "contenders.")


def encoder_decoder_data(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean metric of the finished members: encoder × decoder activation."""
    ok = runs[runs["status"] == "ok"]
    return ok.pivot_table(index="encoder", columns="decoder", values=metric, aggfunc="mean")


def dropout_gap_data(epochs: pd.DataFrame) -> pd.DataFrame:
    """The last epoch's validation − training reconstruction per activation and dropout value
    (mean over cells and seeds): how much dropout narrows the generalisation gap."""
    last = epochs[epochs["epoch"] == epochs.groupby(["trial", "seed"])["epoch"].transform("max")]
    gap = last.assign(gap=last["val_recon"] - last["train_recon"])
    return gap.pivot_table(index="activation", columns="dropout", values="gap", aggfunc="mean")


def dropout_gap(ctx) -> None:
    if "dropout" not in ctx.study.space or ctx.epochs.empty or "val_recon" not in ctx.epochs:
        return
    data = dropout_gap_data(ctx.epochs)
    ctx.doc.heading("Dropout: the train / validation gap" + ctx.scope)
    ctx.doc.para("Validation minus training reconstruction (nats/image) at the last epoch, mean "
                 "over cells and seeds, per dropout value; training numbers are measured with "
                 "dropout on, validation without it.")
    view = data.reindex([a for a in ctx.order if a in data.index])
    ctx.doc.table(view.map(lambda v: fmt(v, 2)).rename(columns=lambda c: f"dropout {c:g}").reset_index())


def learned_shape_data(samples, runs: pd.DataFrame) -> dict[tuple[str, str], dict]:
    """(activation, side) → {"x", "init" (points,), "mean", "low", "high" (layers, points)}: each
    learnable activation's shape per layer, mean and range over its finished members (side
    names the architecture too when it varies: its layers are another model's)."""
    curves: dict[tuple[str, str], dict[str, list]] = {}
    archs = "arch" in runs and runs["arch"].nunique() > 1  # an mlp's layers are not a conv's
    for _, r in runs[runs["status"] == "ok"].iterrows():
        arrays = figures.load_images(samples, r["trial"], r["seed"])
        first, second = FAMILY[r.get("family", "vae")].networks
        for side, prefix, name in ((first, "", r.get("encoder", r["activation"])),
                                   (second, "dec_", r.get("decoder", r.get("decoder_activation")))):
            if f"{prefix}shape" in arrays:
                where = f"{side}, {r['arch']}" if archs else side
                entry = curves.setdefault((name or r["activation"], where), {"shape": [], "init": []})
                entry["shape"].append(arrays[f"{prefix}shape"])
                entry["init"].append(arrays[f"{prefix}shape0"])
    out = {}
    for key, c in curves.items():
        shapes = np.stack(c["shape"])  # (members, layers, points)
        out[key] = {"x": np.asarray(SHAPE_GRID), "init": c["init"][0][0], "mean": shapes.mean(0),
                    "low": shapes.min(0), "high": shapes.max(0), "members": len(shapes)}
    return out


def learned_shapes(ctx) -> None:
    samples = ctx.out_dir / "samples"
    data = learned_shape_data(samples, ctx.ok) if not ctx.ok.empty and samples.exists() else {}
    trace = learning_data(ctx.epochs)
    if not data and trace.empty:
        return
    ctx.doc.heading("Learned activations" + ctx.scope)
    if data:
        ctx.figure(plots.learned_shapes(data, ctx.fig_dir / f"learned_shapes{ctx.tag}.png"),
                   "Each learnable activation's shape after training, per hidden layer (mean over "
                   "its members, band: their range), beside its initial shape (dashed); a per-unit "
                   "activation is averaged over its units; meta_acon, whose β each example sets, "
                   "is drawn with each unit's β at its mean over the last epoch's training "
                   "examples (the shape at a typical β, not the mean of the shapes).")
        ctx.doc.para("Largest change from init: the largest distance, over the layers and x in "
                     "[−3, 3], between the mean learned shape and the initial one.")
        ctx.doc.table(pd.DataFrame([{"activation": a, "side": side, "members": d["members"],
                                     "largest change from init": fmt(float(np.abs(d["mean"] - d["init"]).max()), 3)}
                                    for (a, side), d in data.items()]))
    if not trace.empty:
        _learning(ctx, trace)


def learning_data(epochs: pd.DataFrame) -> pd.DataFrame:
    """What learnable activations held epoch by epoch (epochs.csv's `beta_<layer>` and
    `mix_<base>_<layer>`): per activation (the layer's own: a decoder layer's is the decoder's),
    layer, quantity (`β`, or a base's name for a mixture weight) and epoch, the mean over
    members and their range."""
    columns = [c for c in epochs.columns if c.startswith(("beta_", "mix_"))] if not epochs.empty else []
    rows = []
    for col in columns:
        part = epochs[epochs[col].notna()]
        if part.empty:
            continue
        quantity, _, layer = col.partition("_")[2].rpartition("_") if col.startswith("mix_") else ("β", "", col[5:])
        own = part["encoder"] if "encoder" in part else part["activation"]  # a pair's: its parts
        if layer.split(".")[0] in DECODER_LAYERS:
            own = (part["decoder"] if "decoder" in part else
                   part["decoder_activation"].fillna(part["activation"]) if "decoder_activation" in part
                   else own)
        g = part.assign(owner=own).groupby(["owner", "epoch"])[col]
        stats_ = g.agg(["mean", "min", "max", "size"]).reset_index()
        rows.append(stats_.rename(columns={"owner": "activation", "min": "low", "max": "high", "size": "members"})
                    .assign(layer=layer, quantity=quantity))
    if not rows:
        return pd.DataFrame(columns=["activation", "layer", "quantity", "epoch", "mean", "low", "high", "members"])
    out = pd.concat(rows, ignore_index=True)
    return out[["activation", "layer", "quantity", "epoch", "mean", "low", "high", "members"]]


def _learning(ctx, trace: pd.DataFrame) -> None:
    write_csv(trace, ctx.out_dir / f"learned_over_training{ctx.tag}.csv")
    ctx.doc.para("Over training (learned_over_training" + ctx.tag + ".csv): ACON's switch β — acon's "
                 "per unit, meta_acon's computed from each example, both averaged over the "
                 "epoch's training examples and a layer's units; β → 0 makes it linear (the mean "
                 "of p₁x and p₂x), a large β a max of the two — and blend's weight on each base "
                 "per layer. Named by the layer the activation follows.")
    ctx.doc.bullets(learning_sentences(trace))
    ctx.figure(plots.learning(trace, ctx.fig_dir / f"learned_over_training{ctx.tag}.png"),
               "Learnable activations over training: one panel per activation and layer, the mean "
               "over its members (band: their range; dotted: the first epoch's value) — β for acon "
               "and meta_acon, each base's weight for blend; each panel has its own scale.")


STILL = 0.1
"""A switch or weight that moved less than this over training kept the form it started with."""


def learning_sentences(trace: pd.DataFrame) -> list[str]:
    """Per activation: where its switch or mixture started and ended, layer by layer, and
    whether it moved at all."""
    out = []
    for act, part in trace.groupby("activation", sort=False):
        first, last = part["epoch"].min(), part["epoch"].max()
        ends = part[part["epoch"].isin([first, last])].pivot_table(
            index=["layer", "quantity"], columns="epoch", values="mean", sort=False)
        moved = (ends[last] - ends[first]).abs()
        layers = list(dict.fromkeys(part["layer"]))
        switch = (part["quantity"] == "β").all()
        still = ("" if moved.max() >= STILL else
                 f"; no β moved by {STILL:g} or more: it switches as it started (its p₁, p₂ may "
                 "have moved: the learned shapes show it)" if switch else
                 f"; no weight moved by {STILL:g} or more: it kept the mix it started with")
        if switch:
            moves = ", ".join(f"{layer} {ends.at[(layer, 'β'), first]:.2f} → {ends.at[(layer, 'β'), last]:.2f}"
                              for layer in layers)
            out.append(f"{act}: β from epoch {first} to {last} — {moves}{still}.")
            continue
        said = []
        for layer in layers:
            weights, change = ends.loc[layer], moved.loc[layer]
            top, mover = weights[last].idxmax(), change.idxmax()
            said.append(f"{layer} {top} {weights.at[top, last]:.2f} largest, {mover} moved most "
                        f"({weights.at[mover, first]:.2f} → {weights.at[mover, last]:.2f})")
        out.append(f"{act} at epoch {last}: " + "; ".join(said)
                   + f" (uniform: {1 / part['quantity'].nunique():.2f}){still}.")
    return out


VANISHED, EXPLODED = 0.1, 10.0
"""A layer's gradients vanished when their mean norm fell below VANISHED × its first epoch's,
exploded when it rose above EXPLODED × (or stopped being finite)."""


def gradient_flow_data(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per family, activation, layer and epoch: the mean over members (every cell and seed) of
    the layer's gradient norm (`grad`) and of its fraction of zero-gradient units (`zero`)."""
    empty = pd.DataFrame(columns=["family", "activation", "layer", "epoch", "grad", "zero"])
    layers = [c[len("grad_"):] for c in epochs.columns if c.startswith("grad_")]
    if not layers or epochs.empty:
        return empty
    frame = epochs.assign(family=epochs["family"] if "family" in epochs else "vae")
    rows = []
    for layer in layers:
        cols = {"grad": f"grad_{layer}", "zero": f"zero_grad_{layer}"}
        part = frame[frame[cols["grad"]].notna()]
        if part.empty:
            continue
        have = {k: v for k, v in cols.items() if v in part}
        mean = part.groupby(["family", "activation", "epoch"])[list(have.values())].mean().reset_index()
        rows.append(mean.rename(columns={v: k for k, v in have.items()}).assign(layer=layer))
    if not rows:  # every member diverged before a finite gradient was recorded
        return empty
    out = pd.concat(rows, ignore_index=True)
    if "zero" not in out:
        out["zero"] = np.nan
    return out[["family", "activation", "layer", "epoch", "grad", "zero"]]


def gradient_verdicts(flow: pd.DataFrame) -> pd.DataFrame:
    """Per family, activation and layer: the first and last epochs' mean gradient norms, their
    ratio, the first epoch at which the norm had vanished or exploded (relative to the first
    epoch's; NaN if never), and the last epoch's zero-gradient fraction."""
    rows = []
    for (family, act, layer), part in flow.groupby(["family", "activation", "layer"], sort=False):
        part = part.sort_values("epoch")
        first = float(part["grad"].iloc[0])
        ratio = part["grad"] / first if first > 0 else pd.Series(np.nan, index=part.index)
        gone = part["epoch"][(ratio < VANISHED)]
        blown = part["epoch"][(ratio > EXPLODED) | ~np.isfinite(part["grad"])]
        rows.append({"family": family, "activation": act, "layer": layer, "first_norm": first,
                     "last_norm": float(part["grad"].iloc[-1]), "last_over_first": float(ratio.iloc[-1]),
                     "vanished_at": float(gone.iloc[0]) if len(gone) else np.nan,
                     "exploded_at": float(blown.iloc[0]) if len(blown) else np.nan,
                     "zero_at_end": float(part["zero"].iloc[-1])})
    out = pd.DataFrame(rows)
    if not out.empty:  # against the other activations: a gap there from the start is not a decay
        median = out.groupby(["family", "layer"])["first_norm"].transform("median")
        out["first_vs_median"] = out["first_norm"] / median
    return out


def _weak_start_sentence(verdicts: pd.DataFrame) -> str:
    hit = verdicts[verdicts["first_vs_median"] < VANISHED]
    if hit.empty:
        return (f"No activation starts with a layer's gradient below {VANISHED:g}× the median "
                f"activation's in that layer.")
    parts = []
    for act, rows in hit.groupby("activation", sort=False):
        parts.append(f"{act} — " + ", ".join(f"{r.layer} ({r.first_vs_median:.2g}×)" for r in rows.itertuples()))
    return (f"Weak from the first epoch (its norm below {VANISHED:g}× the median activation's in "
            f"that layer): " + "; ".join(parts) + ".")


def _gradient_sentence(verdicts: pd.DataFrame, word: str, column: str) -> str:
    hit = verdicts[verdicts[column].notna()]
    if hit.empty:
        return f"No activation's gradients {word} in any layer."
    parts = []
    for act, rows in hit.groupby("activation", sort=False):
        where = ", ".join(f"{r.layer} (by epoch {int(getattr(r, column))})" for r in rows.itertuples())
        parts.append(f"{act} — {where}")
    return f"Gradients {word}: " + "; ".join(parts) + "."


def gradient_flow(ctx) -> None:
    flow = gradient_flow_data(ctx.epochs)
    if flow.empty:
        return
    verdicts = gradient_verdicts(flow)
    write_csv(verdicts, ctx.out_dir / f"gradient_flow{ctx.tag}.csv")
    ctx.doc.heading("Gradient flow" + ctx.scope)
    ctx.doc.para(f"Each layer's gradient norm (weights and bias, the root mean square over an "
                 f"epoch's steps), mean over an activation's members (every cell), per epoch. "
                 f"Layers as the model names them: enc.k and dec.k the encoder's and decoder's "
                 f"hidden layers in order, head the encoder's μ and log σ² layer, out the "
                 f"decoder's output layer (conv models: conv.k, proj, deconv.k). A layer's "
                 f"gradients *vanished* when that fell below {VANISHED:g}× its first epoch's, "
                 f"*exploded* when it rose above {EXPLODED:g}× (or stopped being finite); a unit's "
                 f"gradient counts as zero below {ZERO_GRAD:g}× the root mean square of its "
                 f"layer's units (gradient_flow{ctx.tag}.csv has every layer's numbers).")
    cause = _cause_sentence(verdicts, collapse_epochs(ctx.epochs))
    ctx.doc.bullets([_weak_start_sentence(verdicts),
                     _gradient_sentence(verdicts, "vanished", "vanished_at"),
                     *([cause] if cause else []),
                     _gradient_sentence(verdicts, "exploded", "exploded_at"),
                     _zero_sentence(verdicts)])
    names = set(ctx.epochs["activation"].str.split("→").explode())  # a pair's two parts
    pooled = sorted(a for a in names if pieces_of(a) > 1)
    ctx.doc.para("How to read it: Adam scales each parameter's step by its own gradient's "
                 "running size, so a small gradient slows learning less than it would under "
                 "SGD — the norms say where the learning signal is weak, not how fast weights "
                 "move. And a vanished encoder gradient in a member whose posterior collapsed "
                 "(see Posterior collapse) may follow the collapse rather than cause it: once "
                 "the code carries nothing, the encoder's only gradient is the KL term's."
                 + (f" A norm sums over a layer's weights, and {', '.join(pooled)}'s layers before "
                    "an activation hold K times the weights: at equal gradients per weight their "
                    "norms are about √K larger." if pooled else ""))
    ctx.doc.para("Beside the outcome, per activation in ranking order: its weakest layer at the "
                 "first epoch (norm against the median activation's), the layers whose gradients "
                 "vanished or exploded, its layer with most zero-gradient units at the end (zero "
                 "relative to the layer's own units, so a uniformly weak layer, as sigmoid's, "
                 "shows none: its norm says it; before a maxout the units are its pieces), and "
                 "— the symptom a vanished gradient may cause or follow — its active latent "
                 "units and I(x; z) (mean over members, per latent size where it varies).")
    ctx.doc.table(why_table(verdicts, ctx.ok, ctx.order))
    for family, part in flow.groupby("family", sort=False):
        tag = ctx.tag + (f"_{family}" if flow["family"].nunique() > 1 else "")
        ctx.figure(plots.gradient_flow(part, ctx.order, ctx.fig_dir / f"gradient_flow{tag}.png"),
                   f"Gradient norm per layer over training ({family}; log scale), mean over each "
                   f"activation's members.")


def why_table(verdicts: pd.DataFrame, runs: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """One row per family and activation (in `order`): gradient verdicts beside its members'
    mean active units and mutual information."""
    rows = []
    ranked = {a: i for i, a in enumerate(order)}
    latents = sorted(runs["latent_dim"].dropna().unique()) if "latent_dim" in runs else []
    per_latent = len(latents) > 1  # a collapse at one latent size hides in the mean over both
    suffix = f" (latent_dim {' / '.join(f'{v:g}' for v in latents)})" if per_latent else ""

    def mean_of(mine: pd.DataFrame, col: str) -> str:
        if col not in mine or not len(mine):
            return "–"
        if not per_latent:
            return fmt(float(mine[col].mean()), 2)
        return " / ".join(fmt(float(mine.loc[mine["latent_dim"] == v, col].mean()), 2) for v in latents)

    for (family, act), v in sorted(verdicts.groupby(["family", "activation"], sort=False),
                                   key=lambda kv: (kv[0][0], ranked.get(kv[0][1], len(ranked)))):
        weak = v.loc[v["first_vs_median"].idxmin()]
        zero = v.loc[v["zero_at_end"].fillna(-1).idxmax()]
        mine = runs[runs["activation"] == act] if "activation" in runs else runs.iloc[:0]
        if "family" in mine:
            mine = mine[mine["family"] == family]

        def at(column: str) -> str:
            hit = v[v[column].notna()]
            return ", ".join(f"{r.layer} (epoch {int(getattr(r, column))})" for r in hit.itertuples()) or "–"

        rows.append({**({"family": family} if verdicts["family"].nunique() > 1 else {}),
                     "activation": act, "rank": ranked[act] + 1 if act in ranked else "–",
                     "weakest at epoch 1": f"{weak['layer']} {weak['first_vs_median']:.2g}×",
                     "vanished": at("vanished_at"), "exploded": at("exploded_at"),
                     "most zero-gradient units": (f"{zero['layer']} {zero['zero_at_end']:.0%}"
                                                  if zero["zero_at_end"] >= 0.005 else "–"),
                     **{name + suffix: mean_of(mine, col)
                        for name, col in (("active units", "active_units"), ("I(x; z)", "mutual_info"))}})
    return pd.DataFrame(rows)


COLLAPSED_KL = 0.01
"""nats per latent dimension: a member whose training KL fell below this (times its latent size)
has a code that carries almost nothing — collapsed (the active-unit threshold's scale)."""


def collapse_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per family and activation: how many members' training KL fell below COLLAPSED_KL per
    latent dimension, and the median over them of the first epoch it did."""
    if epochs.empty or "train_kl" not in epochs or "latent_dim" not in epochs:
        return pd.DataFrame(columns=["family", "activation", "members", "collapsed", "collapsed_at"])
    frame = epochs.assign(family=epochs["family"] if "family" in epochs else "vae")
    frame = frame[frame["train_kl"].notna()]
    low = frame[frame["train_kl"] < COLLAPSED_KL * frame["latent_dim"]]
    member = ["family", "activation", "trial", "seed"]
    first = low.groupby(member)["epoch"].min().reset_index()
    counts = frame.drop_duplicates(member).groupby(["family", "activation"]).size().rename("members")
    at = first.groupby(["family", "activation"])["epoch"].agg(["size", "median"])
    out = counts.to_frame().join(at.rename(columns={"size": "collapsed", "median": "collapsed_at"}))
    return out.fillna({"collapsed": 0}).reset_index()


def _cause_sentence(verdicts: pd.DataFrame, collapsed: pd.DataFrame) -> str | None:
    """For each activation whose gradients vanished: whether its code collapsed first."""
    gone = verdicts[verdicts["vanished_at"].notna()]
    if gone.empty or collapsed.empty:
        return None
    parts = []
    for (family, act), rows in gone.groupby(["family", "activation"], sort=False):
        c = collapsed[(collapsed["family"] == family) & (collapsed["activation"] == act)]
        first = int(rows["vanished_at"].min())
        if c.empty or not c["collapsed"].iloc[0]:
            parts.append(f"{act}'s code did not collapse, so its vanishing gradients (from epoch "
                         f"{first}) are not a collapse's symptom")
            continue
        n, of, at = int(c["collapsed"].iloc[0]), int(c["members"].iloc[0]), float(c["collapsed_at"].iloc[0])
        order = (f"before its gradients vanished (epoch {first}): the vanishing follows the collapse"
                 if at < first else f"in the epoch its gradients vanished ({first})" if at == first else
                 f"after its gradients vanished (epoch {first}): the collapse may follow the vanishing")
        parts.append(f"{act}'s training KL fell below {COLLAPSED_KL:g} nats per latent dimension in "
                     f"{n} of {of} members, by epoch {at:g} (median), {order}")
    return "Cause or symptom: " + "; ".join(parts) + "."


def _zero_sentence(verdicts: pd.DataFrame) -> str:
    """Which activations end training with units whose gradient is zero (≥ 5% of a layer)."""
    hit = verdicts[verdicts["zero_at_end"] >= 0.05]
    if hit.empty:
        return "No layer ends training with 5% or more of its units at zero gradient."
    parts = [f"{r.activation} {r.layer} {r.zero_at_end:.0%}" for r in hit.itertuples()]
    return "Units with (near) zero gradient at the last epoch: " + ", ".join(parts) + "."
