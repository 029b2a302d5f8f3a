"""The report's data across families, encoder × decoder pairs and dropout (torch-free)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ablate.analysis.model_sections import (dropout_gap_data, encoder_decoder_data, family_comparisons,
                                            family_tau)
from ablate.analysis.tables import pair_contenders
from ablate.study.loader import parse_study


def _runs(order_by_family: dict[str, list[str]], seeds=(0, 1, 2)) -> pd.DataFrame:
    """test_recon = the activation's position in its family's order (+ a seed wobble)."""
    rows = [{"family": f, "activation": a, "seed": s, "status": "ok", "latent_dim": 2,
             "kl_weight": 1.0 if f == "vae" else None, "test_recon": 10.0 + i + 0.01 * s}
            for f, order in order_by_family.items() for i, a in enumerate(order) for s in seeds]
    return pd.DataFrame(rows)


def test_family_tau_is_one_for_equal_rankings_and_minus_one_for_reversed():
    acts = ["relu", "gelu", "tanh", "elu"]
    runs = _runs({"ae": acts, "dae": acts, "vae": acts[::-1]})
    comparisons = family_comparisons(runs, ["family", "kl_weight", "latent_dim"], "relu")
    assert list(comparisons["ae"].avg_ranks.index) == acts
    tau = family_tau(comparisons)
    assert tau.loc["ae", "dae"] == pytest.approx(1.0)
    assert tau.loc["ae", "vae"] == pytest.approx(-1.0)


def test_dropout_gap_is_validation_minus_training_at_the_last_epoch():
    epochs = pd.DataFrame([
        {"trial": 0, "seed": 0, "epoch": e, "activation": "relu", "dropout": 0.0,
         "train_recon": 10.0 - e, "val_recon": 12.0 - e} for e in (1, 2)] + [
        {"trial": 1, "seed": 0, "epoch": e, "activation": "relu", "dropout": 0.2,
         "train_recon": 11.0, "val_recon": 10.5} for e in (1, 2)])
    gap = dropout_gap_data(epochs)
    assert gap.loc["relu", 0.0] == pytest.approx(2.0) and gap.loc["relu", 0.2] == pytest.approx(-0.5)


def test_pairs_are_the_contenders_when_the_decoder_varies():
    study = parse_study("space: {activation: [relu, tanh], decoder_activation: [relu, tanh]}", "s.yaml")
    runs = pd.DataFrame({"activation": ["relu", "relu", "tanh"], "decoder_activation": ["relu", "tanh", "relu"],
                         "status": "ok", "test_nll": [1.0, 2.0, 3.0]})
    paired = pair_contenders(study, runs)
    assert list(paired["activation"]) == ["relu→relu", "relu→tanh", "tanh→relu"]
    table = encoder_decoder_data(paired, "test_nll")
    assert table.loc["relu", "tanh"] == 2.0 and table.loc["tanh", "relu"] == 3.0


def test_gradient_flow_names_the_layers_whose_gradients_vanished_or_exploded_and_when():
    from ablate.analysis.model_sections import (_gradient_sentence, _weak_start_sentence, gradient_flow_data,
                                                gradient_verdicts)

    rows = []
    for act, scale in (("sigmoid", [1.0, 0.3, 0.05, 0.01]), ("relu", [1.0, 0.9, 0.8, 0.8]),
                       ("exp", [1.0, 4.0, 20.0, float("inf")])):
        for seed in (0, 1):
            for epoch, g in enumerate(scale, 1):
                rows.append({"activation": act, "seed": seed, "epoch": epoch, "grad_enc.0": g * (1 + seed),
                             "zero_grad_enc.0": 0.2 if act == "relu" else 0.0, "grad_out": 1.0,
                             "zero_grad_out": 0.0})
    flow = gradient_flow_data(pd.DataFrame(rows))
    assert set(flow["layer"]) == {"enc.0", "out"} and (flow["family"] == "vae").all()
    enc = flow[(flow["layer"] == "enc.0") & (flow["activation"] == "sigmoid")]
    assert enc["grad"].tolist() == pytest.approx([1.5, 0.45, 0.075, 0.015])  # mean over the seeds
    v = gradient_verdicts(flow).set_index(["activation", "layer"])
    assert v.loc[("sigmoid", "enc.0"), "vanished_at"] == 3 and np.isnan(v.loc[("relu", "enc.0"), "vanished_at"])
    assert v.loc[("exp", "enc.0"), "exploded_at"] == 3 and np.isnan(v.loc[("sigmoid", "out"), "exploded_at"])
    assert v.loc[("relu", "enc.0"), "zero_at_end"] == pytest.approx(0.2)
    said = _gradient_sentence(v.reset_index(), "vanished", "vanished_at")
    assert said == "Gradients vanished: sigmoid — enc.0 (by epoch 3)."
    assert _weak_start_sentence(v.reset_index()).startswith("No activation starts")
    weak = pd.DataFrame(rows).assign(**{"grad_enc.0": lambda f: np.where(f["activation"] == "relu", 0.01, f["grad_enc.0"])})
    said = _weak_start_sentence(gradient_verdicts(gradient_flow_data(weak)))
    assert said.startswith("Weak from the first epoch") and "relu — enc.0 (0.0067×)" in said, said
    diverged = pd.DataFrame(rows).assign(**{"grad_enc.0": np.nan, "grad_out": np.nan})
    assert gradient_flow_data(diverged).empty, "no finite gradient: nothing to draw, no error"


def test_the_why_table_puts_gradient_verdicts_beside_collapse_in_ranking_order():
    from ablate.analysis.model_sections import gradient_flow_data, gradient_verdicts, why_table

    rows = [{"activation": act, "seed": s, "epoch": e, "grad_enc.0": g, "zero_grad_enc.0": z, "grad_out": 1.0,
             "zero_grad_out": 0.0}
            for act, gs, z in (("sigmoid", [0.01, 0.0005], 0.0), ("relu", [1.0, 0.9], 0.3)) for s in (0, 1)
            for e, g in enumerate(gs, 1)]
    runs = pd.DataFrame([{"activation": "relu", "active_units": 4.0, "mutual_info": 2.5},
                         {"activation": "sigmoid", "active_units": 0.0, "mutual_info": 0.0}])
    table = why_table(gradient_verdicts(gradient_flow_data(pd.DataFrame(rows))), runs, ["relu", "sigmoid"])
    assert table["activation"].tolist() == ["relu", "sigmoid"] and table["rank"].tolist() == [1, 2]
    sig = table.set_index("activation").loc["sigmoid"]
    assert sig["vanished"] == "enc.0 (epoch 2)" and sig["weakest at epoch 1"] == "enc.0 0.02×"
    assert sig["active units"] == "0.00" and sig["most zero-gradient units"] == "–"
    assert table.set_index("activation").loc["relu", "most zero-gradient units"] == "enc.0 30%"


def test_learning_data_follows_each_layers_own_activation_and_says_where_it_ended():
    from ablate.analysis.model_sections import learning_data, learning_sentences

    rows = []
    for seed in (0, 1):
        for epoch in (1, 2):
            rows.append({"activation": "blend", "decoder_activation": "acon", "seed": seed, "epoch": epoch,
                         "mix_relu_enc.0": 0.5 + 0.3 * (epoch - 1) + 0.1 * seed,
                         "mix_tanh_enc.0": 0.5 - 0.05 * (epoch - 1) - 0.1 * seed,
                         "beta_dec.0": 1.0 + epoch * (seed + 1)})
    trace = learning_data(pd.DataFrame(rows))
    assert set(trace["activation"]) == {"blend", "acon"}, "a decoder layer's activation is the decoder's"
    beta = trace[trace["quantity"] == "β"].set_index("epoch")
    assert beta.loc[2, "mean"] == pytest.approx(4.0) and (beta.loc[2, "low"], beta.loc[2, "high"]) == (3.0, 5.0)
    said = learning_sentences(trace)
    assert "blend at epoch 2: enc.0 relu 0.85 largest, relu moved most (0.55 → 0.85) (uniform: 0.50)." in said
    assert "acon: β from epoch 1 to 2 — dec.0 2.50 → 4.00." in said
    still = trace.assign(mean=np.where(trace["quantity"] == "β", 1.0, trace["mean"]))
    assert learning_sentences(still)[1].endswith("no β moved by 0.1 or more: it switches as it started (its "
                                                 "p₁, p₂ may have moved: the learned shapes show it).")
    assert learning_data(pd.DataFrame(rows).drop(columns=["mix_relu_enc.0", "mix_tanh_enc.0", "beta_dec.0"])).empty
    pairs = pd.DataFrame(rows).assign(encoder="blend", decoder="acon", activation="blend→acon")  # pair_contenders
    assert set(learning_data(pairs)["activation"]) == {"blend", "acon"}


def test_capacity_shows_each_activations_cost_and_names_the_bigger_ones():
    from ablate.analysis.sections import capacity, capacity_sentence

    runs = pd.DataFrame([{"activation": a, "params": p, "flops": f} for a, p, f in (
        ("relu", 1000, 2e6), ("relu", 1200, 2.4e6), ("maxout", 1900, 3.9e6), ("maxout", 1900, 3.9e6),
        ("acon", 1030, 2.06e6), ("acon", 1030, 2.06e6))])
    cap = capacity(runs).set_index("activation")
    assert cap.loc["relu", "params"] == "1,000–1,200" and cap.loc["relu", "FLOPs/example"] == "2 M–2.4 M"
    assert cap.loc["maxout", "params"] == "1,900" and cap.loc["maxout", "FLOPs/example"] == "3.9 M"
    said = capacity_sentence(cap.reset_index(), "relu", ["maxout", "relu", "acon"])
    assert "maxout (1.73× the parameters, 1.77× the FLOPs)" in said and "acon (" not in said  # 1.0× relu
    assert "They rank maxout 1 of 3; the best activation no bigger than relu, relu, ranks 2" in said
    assert capacity_sentence(cap.reset_index().query("activation != 'maxout'"), "relu") == ""
    assert capacity(runs.drop(columns="flops")).empty, "runs from before FLOPs were kept: no column"


def test_a_vanished_gradient_after_the_code_collapsed_is_called_its_symptom():
    from ablate.analysis.model_sections import (_cause_sentence, collapse_epochs, gradient_flow_data,
                                                gradient_verdicts, why_table)

    rows = []
    for act, kl, grad in (("sigmoid", [1.0, 0.05, 0.01, 0.01], [1.0, 0.5, 0.05, 0.01]),
                          ("tanh", [3.0, 3.0, 3.0, 3.0], [1.0, 0.5, 0.05, 0.01]),
                          ("relu", [3.0, 3.0, 3.0, 3.0], [1.0, 1.0, 1.0, 1.0])):
        for trial, latent in ((0, 2), (1, 8)):
            for epoch, (k, g) in enumerate(zip(kl, grad), 1):
                rows.append({"activation": act, "trial": trial, "seed": 0, "latent_dim": latent, "epoch": epoch,
                             "train_kl": k * latent / 2, "grad_enc.0": g})
    epochs = pd.DataFrame(rows)
    collapsed = collapse_epochs(epochs).set_index("activation")
    # sigmoid's KL per latent dimension: 0.5, 0.025, 0.005 — below 0.01 from epoch 3, in both members
    assert collapsed.loc["sigmoid", "collapsed"] == 2 and collapsed.loc["sigmoid", "collapsed_at"] == 3
    assert collapsed.loc["relu", "collapsed"] == 0
    verdicts = gradient_verdicts(gradient_flow_data(epochs))
    said = _cause_sentence(verdicts, collapse_epochs(epochs))
    assert ("sigmoid's training KL fell below 0.01 nats per latent dimension in 2 of 2 members, by epoch 3 "
            "(median), in the epoch its gradients vanished (3)") in said
    assert "tanh's code did not collapse, so its vanishing gradients (from epoch 3) are not a collapse's symptom" in said
    runs = pd.DataFrame([{"activation": "tanh", "latent_dim": d, "active_units": u, "mutual_info": 1.0}
                         for d, u in ((2, 2.0), (8, 4.0))])
    table = why_table(verdicts, runs, ["relu", "tanh", "sigmoid"]).set_index("activation")
    assert table.loc["tanh", "active units (latent_dim 2 / 8)"] == "2.00 / 4.00"


def test_the_model_sentence_says_how_maxout_widens_its_layers():
    from ablate.analysis.sections import model_sentence

    text = ("name: m\ndataset: {name: digits}\nmodel: {hidden: [32]}\nspace:\n"
            "  activation: [relu, maxout, 'maxout:3']\n")
    said = model_sentence(parse_study(text, "m.yaml"))
    assert said.endswith("With maxout (K = 2), maxout:3 (K = 3) the layer before each of its activations "
                         "has K times the units or channels listed (K linear pieces per unit, the max kept).")
    assert "maxout" not in model_sentence(parse_study(text.replace(", maxout, 'maxout:3'", ""), "m.yaml"))
