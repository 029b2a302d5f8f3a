"""Gradient flow: each member's per-layer gradient norms and zero-gradient units, recorded
from the fleet's stacked gradients, against torch.autograd on the member's own textbook model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ablate.study.schema import RunConfig
from ablate.training.fleet import Fleet, Member
from ablate.training.gradients import ZERO_GRAD, GradientFlow
from ablate.training.kept import member_weights
from ablate.training.loop import train_cohort

LAYERS = ("enc.0", "head", "dec.0", "out")


def member(key, seed=0, **kw) -> Member:
    return Member(key, RunConfig(**{"hidden": (16,), "latent_dim": 3, "epochs": 2, "batch_size": 32,
                                    "activation": "tanh", **kw}), seed)


def textbook_norms(weights: dict, x, eps, beta: float) -> dict[str, float]:
    """The member's VAE written out with plain tensors (Kingma & Welling), one backward pass:
    each layer's gradient norm, weight and bias together."""
    p = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
    L = p["dec.0.w"].shape[0]
    h = torch.tanh(x @ p["enc.0.w"] + p["enc.0.b"])
    mu, logvar = (h @ p["head.w"] + p["head.b"]).split(L, -1)
    z = mu + eps * torch.exp(0.5 * logvar)
    logits = torch.tanh(z @ p["dec.0.w"] + p["dec.0.b"]) @ p["out.w"] + p["out.b"]
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)
    (recon + beta * kl).mean().backward()
    return {layer: torch.sqrt(p[f"{layer}.w"].grad.square().sum() + p[f"{layer}.b"].grad.square().sum()).item()
            for layer in LAYERS}


def test_gradient_norms_are_autograds_on_the_members_own_model_alone_and_in_a_cohort(tiny_data):
    target = member("t", seed=1)
    others = [member("o1", activation="relu", latent_dim=5, hidden=(24,)), member("o2", seed=2, latent_dim=2)]
    x = tiny_data.x_train[:32]
    for cohort in ([target], others + [target]):
        fleet = Fleet(cohort, 64)
        i, N = fleet.keys.index("t"), len(cohort)
        weights = member_weights(fleet, i)
        eps = torch.randn(N, 32, fleet.latent, generator=torch.Generator().manual_seed(5))
        eps[:, :, 3:] = 0.0  # the target's noise is its first 3 dimensions
        expected = textbook_norms(weights, x, eps[i, :, :3], 1.0)
        fleet.train_step(x.expand(N, -1, -1), eps, fleet.beta(0, 1))
        got = fleet.flow.take()[i]
        for layer in LAYERS:
            assert abs(got[f"grad_{layer}"] - expected[layer]) <= 1e-4 * expected[layer], (len(cohort), layer)
        assert fleet.flow.take() == [{} for _ in range(N)], "take() starts the next epoch afresh"


def test_the_norm_over_an_epoch_is_the_root_mean_square_of_its_steps():
    from ablate.nets.layers import Linear

    layer = Linear(2, 3, 4)
    layer.place(torch.device("cpu"))
    w = layer.slots["w"]
    w.tensor.data = torch.ones(2, 3, 4)
    flow = GradientFlow(2, {"lin": layer})
    for scale in (3.0, 4.0):
        w.tensor.grad = torch.full((2, 3, 4), scale / 12 ** 0.5)  # norm `scale` for each member
        flow.add({"lin.w": w})
    first = flow.take()[0]
    assert abs(first["grad_lin"] - ((9 + 16) / 2) ** 0.5) < 1e-5


def test_dead_units_have_zero_gradient_and_padding_is_not_counted():
    from ablate.nets.layers import Linear

    layer = Linear(1, 3, 4)
    layer.place(torch.device("cpu"))
    w = layer.slots["w"]
    w.tensor.data = torch.ones(1, 3, 4)
    w.tensor.data[0, :, 3] = 0.0  # a padded unit: all its weights zero
    g = torch.ones(1, 3, 4)
    g[0, :, 0] = 0.0  # a dead unit
    g[0, :, 1] = ZERO_GRAD / 10  # a saturated one, far below its layer's
    w.tensor.grad = g
    flow = GradientFlow(1, {"lin": layer})
    flow.add({"lin.w": w})
    assert abs(flow.take()[0]["zero_grad_lin"] - 2 / 3) < 1e-6  # 2 of the 3 real units


def test_epochs_carry_the_gradient_flow_of_every_layer(tiny_data):
    out = train_cohort([member("a"), member("b", activation="relu", hidden=(24,))], tiny_data, iwae_samples=5)
    for o in out.values():
        assert len(o.history) == 2
        for record in o.history:
            for layer in LAYERS:
                assert record[f"grad_{layer}"] > 0 and 0 <= record[f"zero_grad_{layer}"] <= 1
