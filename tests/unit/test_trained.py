"""A member's own weights taken out of a padded cohort compute exactly what the member
computed inside it (hidden widths, latent sizes, a VAE's two heads, learnable activations)."""

from __future__ import annotations

import pytest
import torch

from ablate.study.schema import RunConfig
from ablate.training.fleet import Fleet, Member
from ablate.training.kept import Standalone, _alone, member_weights


@pytest.mark.parametrize("likelihood,acts,pieces", [("bernoulli", ("relu", "snake", "rational"), 1),
                                                    ("gaussian", ("relu", "snake", "rational"), 1),
                                                    ("bernoulli", ("maxout:3",) * 3, 3)])
def test_member_weights_reproduce_the_member_inside_its_padded_cohort(tiny_data, likelihood, acts, pieces):
    base = {"epochs": 1, "batch_size": 64, "likelihood": likelihood}
    members = [Member("wide", RunConfig(hidden=(48, 24), latent_dim=6, activation=acts[0], **base), 0),
               Member("narrow", RunConfig(hidden=(16, 8), latent_dim=2, activation=acts[1], **base), 1),
               Member("mid", RunConfig(hidden=(32, 8), latent_dim=3, activation=acts[2], **base), 2)]
    fleet = Fleet(members, 64)
    x = tiny_data.x_train[:64]
    for _ in range(3):  # move every weight off its init, padding stays zero
        fleet.train_step(x.expand(3, -1, -1), torch.randn(3, 64, fleet.latent), fleet.beta(0, 1))
    with torch.no_grad():
        mu, logvar = fleet.encode(x)
        out = fleet.decode(mu)
        for i, m in enumerate(fleet.members):
            own = member_weights(fleet, i)
            alone = _alone(m.config, fleet.shape)
            for name, slot in alone.slots().items():
                slot.tensor.copy_(own[name][None])
            L = m.config.latent_dim
            mu1, logvar1 = alone.encode(x)
            torch.testing.assert_close(mu1[0], mu[i, :, :L], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(logvar1[0], logvar[i, :, :L], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(alone.decode(mu1)[0], out[i], rtol=1e-5, atol=1e-5)
            assert own["enc.0.w"].shape == (64, pieces * m.config.hidden[0])
            assert own["head.w"].shape == (m.config.hidden[1], 2 * L)


@pytest.mark.parametrize("family,networks", [("vae", {"encoder", "decoder"}), ("gan", {"discriminator", "generator"})])
def test_an_exported_member_names_its_weights_by_its_family_s_networks(family, networks):
    config = RunConfig(family=family, hidden=(8,), latent_dim=2)
    module = Standalone(_alone(config, (1, 4, 4)), config, (1, 4, 4))
    names = [n for n, _ in module.named_buffers()]
    assert {n.split("_")[0] for n in names} == networks
    assert len(names) == len(module.model.slots())
