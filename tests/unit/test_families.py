"""The autoencoder family (dae, sae, cae), dropout and separate decoder activations in the fleet."""

from __future__ import annotations

import pytest
import torch

from ablate.study.schema import RunConfig
from ablate.training.evaluation import evaluate_elbo
from ablate.training.fleet import Fleet, Member
from ablate.training.loop import train_cohort
from tests.members import assert_same_numbers

METRICS = ("test_nelbo", "test_recon", "active_units", "dead_units")


def member(key, seed=0, **kw) -> Member:
    return Member(key, RunConfig(**{"hidden": (32,), "epochs": 3, "batch_size": 64, **kw}), seed)


@pytest.mark.parametrize("extra", [{"family": "dae", "noise": 0.3}, {"family": "sae", "sparsity": 0.01},
                                   {"family": "cae", "contraction": 0.01}, {"family": "ae", "dropout": 0.2},
                                   {"family": "vae", "dropout": 0.2, "decoder_activation": "tanh"}])
def test_member_alone_equals_member_in_cohort_for_every_family(tiny_data, extra):
    target = member("target", seed=1, activation="gelu", latent_dim=4, **extra)
    fam = {"family": extra["family"]}
    others = [member("o1", seed=0, activation="relu", latent_dim=8, **fam),
              member("o2", seed=2, activation="snake", latent_dim=2, hidden=(24,), **extra),
              member("o3", seed=1, activation="prelu", latent_dim=6, dropout=0.5, **fam),
              member("o4", seed=3, activation="gelu", latent_dim=4, decoder_activation="elu", **fam)]
    alone = train_cohort([target], tiny_data, iwae_samples=5)["target"]
    crowd = train_cohort(others + [target], tiny_data, iwae_samples=5)["target"]
    assert_same_numbers(alone, crowd, METRICS)


def test_dae_corrupts_training_inputs_only(tiny_data):
    fleet = Fleet([member("d", family="dae", noise=0.5)], 64)
    seen = []
    encode = fleet.model.encode
    fleet.model.encode = lambda x, hidden=None: (seen.append(x.detach().clone()), encode(x, hidden))[1]
    x = tiny_data.x_train[:64].expand(1, -1, -1)
    fleet.train_step(x, torch.zeros(1, 64, fleet.latent), fleet.beta(0, 1))
    trained_on = seen.pop()
    lit = x > 0
    dropped = (trained_on == 0) & lit
    assert 0.4 < dropped.sum() / lit.sum() < 0.6  # about half of the lit pixels zeroed
    assert torch.equal(trained_on[~dropped], x[~dropped])
    evaluate_elbo(fleet, tiny_data.x_test)  # evaluation: the clean images, shared by members
    assert seen and all(torch.equal(s, tiny_data.x_test[:len(s)]) for s in seen)


def _encoder(fleet: Fleet, i: int):
    """Member i's encoder (one hidden layer, ReLU) as a plain function of one image."""
    s = {k: v.tensor[i] for k, v in fleet.slots.items()}
    L = fleet.members[i].config.latent_dim
    return lambda x: torch.relu(x @ s["enc.0.w"] + s["enc.0.b"][0]) @ s["head.w"][:, :L] + s["head.b"][0, :L]


@pytest.mark.parametrize("family,key", [("sae", "sparsity"), ("cae", "contraction")])
def test_penalty_and_its_gradient_equal_direct_autograd(family, key):
    """One member of a tiny model (5 pixels, 4 hidden units, 2 latent dims): the fleet's
    penalty per image and its gradient match autograd on the member's own weights."""
    fleet = Fleet([member("p", family=family, latent_dim=2, hidden=(4,), **{key: 0.3}),
                   member("q", seed=1, family=family, latent_dim=3, hidden=(4,), **{key: 0.1})], 5)
    x = torch.rand(7, 5, generator=torch.Generator().manual_seed(0))
    x_in = x.expand(2, -1, -1).clone().requires_grad_(True)
    mu, _ = fleet.encode(x_in)
    ours = fleet.family.penalty(fleet, x_in, mu)  # (2, 7)
    ours[0].sum().backward()
    i = 0
    enc = _encoder(fleet, i)
    if family == "sae":
        direct = torch.stack([0.3 * enc(xi).abs().sum() for xi in x])
    else:
        direct = torch.stack([0.3 * torch.autograd.functional.jacobian(enc, xi, create_graph=True).square().sum()
                              for xi in x])
    torch.testing.assert_close(ours[i], direct.detach(), rtol=1e-5, atol=1e-6)
    w = fleet.slots["enc.0.w"].tensor
    ref = torch.autograd.grad(direct.sum(), w)[0]
    torch.testing.assert_close(w.grad[i], ref[i], rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(w.grad[1]) == 0  # the other member's penalty was not backpropagated


def test_dropout_masks_are_per_member_and_only_in_training():
    fleet = Fleet([member("a", dropout=0.5), member("b", seed=1, dropout=0.5), member("c", seed=2)], 64)
    h = torch.ones(3, 16, 32)
    fleet.model.rng = fleet.mask_gens
    masks = fleet.model._dropout_masks(h)
    assert not torch.equal(masks[0], masks[1])  # each member its own masks
    assert set(masks[0].unique().tolist()) == {0.0, 2.0}  # inverted dropout: kept values × 1/(1-p)
    assert torch.equal(masks[2], torch.ones(16, 32))  # p = 0: untouched
    fleet.model.rng = None
    x = torch.rand(10, 64)
    torch.testing.assert_close(fleet.encode(x)[0], fleet.encode(x)[0])  # evaluation: deterministic


def test_decoder_activation_is_used_by_the_decoder_only():
    fleet = Fleet([member("m", activation="relu", decoder_activation="tanh")], 64)
    names = [act.groups[0][0].name for act in fleet.model.acts]
    assert names == ["relu", "tanh"]  # one hidden layer each side


def test_learned_values_and_shapes_are_saved_per_member(tiny_data):
    out = train_cohort([member("s", activation="snake", epochs=1, hidden=(8,)),
                        member("r", seed=1, activation="relu", decoder_activation="rational", epochs=1)],
                       tiny_data, iwae_samples=2)
    snake, rational = out["s"].arrays, out["r"].arrays
    assert snake["act0_alpha"].shape == (8,) and snake["act1_alpha"].shape == (8,)
    assert snake["shape"].shape == snake["shape0"].shape == (1, 61)
    assert "shape" not in rational and rational["dec_shape"].shape == (1, 61)
    assert rational["act1_p"].shape == (6,) and rational["act1_q"].shape == (4,)
    assert not (snake["act0_alpha"] == 1.0).all()  # trained away from its initial 1


def test_a_learnable_decoder_activation_in_several_runs_keeps_each_member_s_parameters(tiny_data):
    """Members are sorted by encoder activation, so a decoder activation shared across encoders
    comes in several runs of members: each member still has its own learnable parameters (one
    slot holds every run's rows), trains as it would alone, and its weights can be taken out."""
    from ablate.training.kept import member_weights

    target = member("target", seed=1, activation="tanh", decoder_activation="snake", latent_dim=4)
    others = [member("a", seed=0, activation="relu", decoder_activation="snake", latent_dim=4),
              member("b", seed=2, activation="relu", decoder_activation="prelu", latent_dim=4),
              member("c", seed=3, activation="gelu", decoder_activation="snake", latent_dim=4)]
    fleet = Fleet(others + [target], 64)
    snake = [layer for layer in fleet.model.acts if any(a.name == "snake" for a, _, _ in layer.groups)][0]
    assert len([g for g in snake.groups if g[0].name == "snake"]) == 2  # gelu→snake; relu→prelu; relu, tanh→snake
    assert len(snake.slots["snake.alpha"].owners) == 3
    alone = train_cohort([target], tiny_data, iwae_samples=5)["target"]
    crowd = train_cohort(others + [target], tiny_data, iwae_samples=5)
    assert_same_numbers(alone, crowd["target"], METRICS)
    assert all(o.status == "ok" and o.weights for o in crowd.values())
    assert {k for k in member_weights(fleet, 0) if "snake" in k}
