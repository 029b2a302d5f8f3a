"""GANs in the fleet: each member's two networks, its own numbers, its own failure."""

from __future__ import annotations

import math

import pytest
import torch

from ablate.study.schema import RunConfig
from ablate.training.fleet import Fleet, Member
from ablate.training.loop import train_cohort
from tests.members import RTOL


def gan(key, seed=0, **kw) -> Member:
    return Member(key, RunConfig(**{"family": "gan", "hidden": (32,), "latent_dim": 4, "epochs": 3,
                                    "batch_size": 64, "lr": 2e-4, **kw}), seed)


def _same(alone, crowd):
    assert alone.status == crowd.status == "ok"
    for ra, rc in zip(alone.history, crowd.history):
        for k in ("train_g_loss", "train_d_loss"):
            assert rc[k] == pytest.approx(ra[k], rel=RTOL), k
    assert set(alone.arrays) == {"prior"}
    assert (crowd.arrays["prior"].astype(int) - alone.arrays["prior"].astype(int)).__abs__().max() <= 1


def test_gan_member_alone_equals_member_in_heterogeneous_cohort(tiny_data):
    target = gan("t", seed=1, activation="leaky_relu")
    others = [gan("o1", activation="relu", latent_dim=8), gan("o2", seed=2, activation="tanh", hidden=(48,)),
              gan("o3", seed=3, activation="snake", dropout=0.2, decoder_activation="relu")]
    _same(train_cohort([target], tiny_data, iwae_samples=2)["t"],
          train_cohort(others + [target], tiny_data, iwae_samples=2)["t"])


def test_conv_gan_member_alone_equals_member_in_cohort(tiny_data):
    conv = {"arch": "conv", "channels": (8, 16), "hidden": ()}
    target = gan("t", seed=1, activation="gelu", **conv)
    _same(train_cohort([target], tiny_data, iwae_samples=2)["t"],
          train_cohort([gan("o", activation="relu", latent_dim=2, **conv), target], tiny_data, iwae_samples=2)["t"])


def test_gan_nan_member_fails_alone(tiny_data):
    healthy = [gan("h1", activation="relu"), gan("h2", seed=1, activation="tanh")]
    doomed = gan("doomed", seed=2, activation="exponential", lr=50.0)
    without = train_cohort(healthy, tiny_data, iwae_samples=2)
    together = train_cohort(healthy + [doomed], tiny_data, iwae_samples=2)
    assert together["doomed"].status == "failed" and together["doomed"].fail_epoch is not None
    for key in ("h1", "h2"):
        _same(without[key], together[key])


def test_discriminator_and_generator_step_their_own_parameters():
    fleet = Fleet([gan("a"), gan("b", seed=1)], 64)
    assert set(fleet.networks) == {"discriminator", "generator"}
    assert {id(s) for n in fleet.networks.values() for s in n} == {id(s) for s in fleet.slots.values()}
    assert fleet.slots["head.w"].tensor.shape[-1] == 1  # one logit
    before = {k: s.tensor.detach().clone() for k, s in fleet.slots.items()}
    x = torch.rand(2, 16, 64)
    loss, g, d = fleet.train_step(x, torch.randn(2, 16, 4), fleet.beta(0, 1))
    assert torch.isfinite(loss).all() and torch.allclose(loss, g + d)
    for k, s in fleet.slots.items():
        assert not torch.equal(before[k], s.tensor), k
        assert s.step.item() == 1, k  # each network's Adam stepped once
    assert math.isclose(fleet.networks["discriminator"][0].step.item(), 1)
