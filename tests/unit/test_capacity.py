"""Maxout and what a member costs: maxout against its textbook layers, a maxout member alone and
in a cohort, and each member's parameter count and FLOPs per example against what its built
model holds and what torch's flop counter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ablate.nets.models import flops, param_count
from ablate.study.schema import RunConfig
from ablate.training.fleet import Fleet, Member
from ablate.training.loop import train_cohort
from tests.members import assert_same_numbers

METRICS = ("test_nelbo", "test_recon", "test_kl", "test_nll", "mutual_info", "active_units")


def member(key, seed=0, **kw) -> Member:
    return Member(key, RunConfig(**{"hidden": (32,), "epochs": 3, "batch_size": 64, **kw}), seed)


def _linear(fleet: Fleet, layer: str) -> nn.Linear:
    """Member 0's stacked layer as a torch.nn.Linear (weights copied)."""
    w, b = fleet.slots[f"{layer}.w"].tensor[0].detach(), fleet.slots[f"{layer}.b"].tensor[0, 0].detach()
    lin = nn.Linear(*w.shape)
    with torch.no_grad():
        lin.weight.copy_(w.T)
        lin.bias.copy_(b)
    return lin


@pytest.mark.parametrize("name,k", [("maxout", 2), ("maxout:3", 3)])
def test_maxout_equals_a_linear_layer_of_k_times_the_units_and_a_max(name, k):
    """Goodfellow et al.'s maxout MLP written as one would for one model: nn.Linear(d, k·w),
    then the max over each unit's k pieces; the same parameter count, hidden values and outputs."""
    w, latent, d = 24, 4, 64
    fleet = Fleet([member("a", activation=name, hidden=(w,), latent_dim=latent)], d)
    enc, head, dec, out = (_linear(fleet, n) for n in ("enc.0", "head", "dec.0", "out"))
    assert (enc.in_features, enc.out_features, dec.out_features) == (d, k * w, k * w)
    textbook = sum(p.numel() for m in (enc, head, dec, out) for p in m.parameters())
    assert param_count(fleet.members[0].config, d) == textbook
    assert sum(s.tensor.numel() for s in fleet.slots.values()) == textbook

    def maxout(h):
        return h.view(*h.shape[:-1], w, k).max(-1).values

    x, z = torch.rand(16, d), torch.randn(16, latent)
    hidden: list = []
    with torch.no_grad():
        mu, logvar = fleet.model.encode(x.unsqueeze(0), hidden)
        h = maxout(enc(x))
        torch.testing.assert_close(hidden[0][0], h)
        torch.testing.assert_close(mu[0], head(h)[:, :latent])
        torch.testing.assert_close(logvar[0], head(h)[:, latent:])
        torch.testing.assert_close(fleet.model.decode(z.unsqueeze(0))[0], out(maxout(dec(z))))


def test_conv_maxout_equals_a_convolution_of_k_times_the_channels_and_a_max():
    fleet = Fleet([member("a", arch="conv", channels=(4,), hidden=(), activation="maxout:3",
                          decoder_activation="relu", latent_dim=3)], (1, 8, 8))
    w, b = fleet.slots["conv.0.w"].tensor[0].detach(), fleet.slots["conv.0.b"].tensor[0].detach()
    conv = nn.Conv2d(1, 12, 4, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    x = torch.rand(5, 1, 8, 8)
    hidden: list = []
    with torch.no_grad():
        fleet.model.encode(x.flatten(1).unsqueeze(0), hidden)
    expected = conv(x).view(5, 4, 3, 4, 4).max(2).values  # channel c's pieces: 3c … 3c + 2
    torch.testing.assert_close(hidden[0][0], expected.movedim(1, -1).flatten(0, -2))


def test_a_maxout_member_alone_equals_it_in_a_padded_heterogeneous_cohort(tiny_data):
    target = member("target", seed=1, activation="maxout", latent_dim=4, hidden=(24,))
    others = [member("o1", seed=0, activation="maxout", latent_dim=8, hidden=(40,), kl_weight=0.5),
              member("o2", seed=2, activation="maxout", latent_dim=2, hidden=(32,), dropout=0.2),
              member("o3", seed=3, activation="maxout", latent_dim=4)]
    alone = train_cohort([target], tiny_data, iwae_samples=10)["target"]
    crowd = train_cohort(others + [target], tiny_data, iwae_samples=10)["target"]
    assert_same_numbers(alone, crowd, METRICS)


def test_maxout_members_train_apart_from_elementwise_ones():
    """The pieces set the width of the layer before the activation, so they are part of the
    cohort key: a fleet refuses to mix them."""
    keys = {c.cohort_key for c in (RunConfig(activation="relu"), RunConfig(activation="maxout"),
                                   RunConfig(activation="maxout:3"),
                                   RunConfig(activation="relu", decoder_activation="maxout"))}
    assert len(keys) == 4
    with pytest.raises(ValueError):
        Fleet([member("a"), member("b", activation="maxout")], 64)


CONFIGS = [dict(activation="relu"), dict(activation="maxout:3", decoder_activation="meta_acon"),
           dict(activation="meta_acon", likelihood="gaussian"), dict(activation="blend", hidden=(32, 16)),
           dict(activation="acon", family="ae"),
           dict(arch="conv", channels=(4, 8), hidden=(16,), activation="maxout"),
           dict(arch="conv", channels=(4, 8), hidden=(), activation="meta_acon", decoder_activation="maxout:4"),
           dict(family="gan", activation="maxout", hidden=(32, 16))]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(map(str, kw.values())))
def test_param_count_and_flops_are_what_the_built_member_holds_and_runs(kw):
    """param_count: every value of one member's slots (activation parameters, a Gaussian's log σ
    included); flops: torch's flop counter over one example's encoding and one code's decoding."""
    config, shape = RunConfig(**{"hidden": (32,), "latent_dim": 5, **kw}), (1, 8, 8)
    fleet = Fleet([Member("a", config, 0)], shape)
    assert param_count(config, shape) == sum(s.tensor.numel() for s in fleet.slots.values())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        x = torch.rand(1, 1, 64)
        fleet.model.discriminate(x) if config.family == "gan" else fleet.model.encode(x)
        fleet.model.decode(torch.zeros(1, 1, 5))
    assert flops(config, shape) == counter.get_total_flops() > 0


def test_maxout_costs_k_times_the_layers_before_it():
    relu, maxout = (RunConfig(activation=a, hidden=(100,), latent_dim=5) for a in ("relu", "maxout:3"))
    # 784→100 and 5→100 layers become 784→300 and 5→300; the head and output layer stay
    assert param_count(maxout, 784) - param_count(relu, 784) == 2 * (785 + 6) * 100
    assert flops(maxout, 784) - flops(relu, 784) == 2 * 2 * (784 + 5) * 100
