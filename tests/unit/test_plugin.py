"""A user's own module (model.module) trained as a fleet: exactly the plain PyTorch loop, a
member's numbers apart from its cohort, kept as the module's own state_dict, and every bad
module refused before training with one line (nets/plugin.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from ablate.errors import UserError
from ablate.nets import plugin
from ablate.streams import Stream, stream_seed
from ablate.study.schema import RunConfig
from ablate.training.fleet import Fleet, Member
from ablate.training.kept import member_weights
from ablate.training.loop import train_cohort
from tests.members import assert_same_numbers

SHAPE = (1, 8, 8)
RESNET = RunConfig(module="examples.resnet_vae:make_vae", options='{"groups": 4, "width": 8}',
                   latent_dim=4, epochs=2, batch_size=64)
MLP = RunConfig(module="tests.own_models:mlp_vae", options='{"width": 32}', latent_dim=4, epochs=3,
                batch_size=64)
METRICS = ("test_nelbo", "test_recon", "test_kl", "test_nll", "mutual_info", "active_units", "dead_units")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def _plain_loop(config: RunConfig, seed: int, x: torch.Tensor, batches: list[torch.Tensor],
                eps: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The textbook loop: the user's module alone, torch.optim.Adam, the VAE's loss per image
    (Bernoulli recon + KL) averaged over the batch; returns its state_dict."""
    module = plugin.build_member(config, SHAPE, stream_seed(seed, Stream.INIT))
    opt = torch.optim.Adam(module.parameters(), lr=config.lr)
    for idx, e in zip(batches, eps):
        xb = x[idx]
        mu, logvar = module.encode(xb.view(-1, *SHAPE))
        logits = module.decode(mu + e * torch.exp(0.5 * logvar)).flatten(1)
        recon = F.binary_cross_entropy_with_logits(logits, xb, reduction="none").sum(1)
        kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1)
        opt.zero_grad()
        (recon + config.kl_weight * kl).mean().backward()
        opt.step()
    return module.state_dict()


def test_a_member_in_a_vmapped_cohort_equals_the_plain_pytorch_loop(tiny_data):
    """The residual GroupNorm VAE of examples/: the target shares its vmapped group with a
    member of another seed and lr, and its cohort with another activation and latent size."""
    target = Member("target", replace(RESNET, lr=2e-3), 1)
    fleet = Fleet([Member("same", RESNET, 2), target, Member("tanh", replace(RESNET, activation="tanh"), 1),
                   Member("small", replace(RESNET, latent_dim=2, activation="elu"), 0)], SHAPE)
    assert len(fleet.model.groups) == 3
    x, n, bs = tiny_data.x_train, len(tiny_data.x_train), 32
    perms, eps = fleet.epoch_draws(n)
    steps = [slice(s, s + bs) for s in range(0, 4 * bs, bs)]
    for s in steps:
        fleet.train_step(x[perms[:, s]], eps[:, s], fleet.beta(0, 1))
    row = fleet.keys.index("target")
    alone = _plain_loop(target.config, 1, x, [perms[row, s] for s in steps],
                        [eps[row, s, :target.config.latent_dim] for s in steps])
    kept = member_weights(fleet, row)
    assert kept.keys() == alone.keys()
    moved = 0.0
    for k, v in alone.items():
        assert _relative(kept[k], v) < 1e-5, k
        moved = max(moved, _relative(v, plugin.build_member(target.config, SHAPE, stream_seed(1, Stream.INIT))
                                     .state_dict()[k]) if v.is_floating_point() else 0.0)
    assert moved > 1e-3, "four Adam steps moved the weights"


def test_a_member_alone_equals_the_member_in_a_heterogeneous_cohort(tiny_data):
    """Other activations (a learnable one), options, lr and latent size around it, and a member
    that diverges: the target's metrics and losses are the same as when it trains alone."""
    target = Member("target", replace(MLP, activation="gelu"), 1)
    others = [Member("o1", MLP, 0), Member("o2", replace(MLP, activation="snake", latent_dim=6), 2),
              Member("o3", replace(MLP, options='{"width": 48}', lr=3e-3), 1),
              Member("doomed", replace(MLP, activation="exponential", lr=50.0), 3)]
    alone = train_cohort([target], tiny_data, iwae_samples=10)["target"]
    crowd = train_cohort(others + [target], tiny_data, iwae_samples=10)
    assert_same_numbers(alone, crowd["target"], METRICS)
    assert crowd["doomed"].status == "failed" and crowd["o2"].status == "ok"


def test_the_built_in_mlp_written_as_a_module_gives_the_built_in_numbers(tiny_data):
    """The same architecture (one hidden layer of 32, PyTorch's default init) as ablate's MLP
    and as a user's module: different draws of the initial weights, so the same numbers within
    seed noise — the mean test NLL over 8 seeds within 3 standard errors of the difference."""
    built_in = RunConfig(hidden=(32,), init="default", latent_dim=4, epochs=8, batch_size=32)
    own = replace(MLP, epochs=8, batch_size=32)
    nll = {}
    for name, config in (("built-in", built_in), ("module", own)):
        out = train_cohort([Member(f"s{s}", config, s) for s in range(8)], tiny_data, iwae_samples=10)
        nll[name] = torch.tensor([o.metrics["test_nll"] for o in out.values()])
    a, b = nll["built-in"], nll["module"]
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(float(a.mean() - b.mean())) < 3 * se, nll


def test_a_gan_trains_its_two_networks_in_turns(tiny_data):
    config = RunConfig(module="tests.own_models:gan", family="gan", latent_dim=4, batch_size=32)
    fleet = Fleet([Member("a", config, 0), Member("b", replace(config, activation="tanh"), 1)], SHAPE)
    networks = {name: {k for k in fleet.slots if fleet.model.network(k) == i}
                for i, name in enumerate(("discriminator", "generator"))}
    assert all(k.split(".", 1)[1].startswith("critic") for k in networks["discriminator"])
    assert all(k.split(".", 1)[1].startswith("generator") for k in networks["generator"])
    x = tiny_data.x_train[:32].expand(2, -1, -1)
    loss, g_loss, d_loss = fleet.train_step(x, torch.randn(2, 32, 4), fleet.beta(0, 1))
    assert torch.isfinite(loss).all() and torch.isfinite(g_loss).all() and torch.isfinite(d_loss).all()


def test_an_autoencoder_module_gives_its_code(tiny_data):
    config = RunConfig(module="tests.own_models:mlp_ae", family="ae", latent_dim=3, epochs=2, batch_size=64)
    out = train_cohort([Member("a", config, 0)], tiny_data, iwae_samples=4)["a"]
    assert out.status == "ok" and math.isfinite(out.metrics["test_recon"])
    assert math.isnan(out.metrics["test_nll"])


def test_a_kept_member_loads_into_the_users_module_without_ablate(tiny_data):
    """Per-unit learnable activation values (snake) too: the module rebuilt by the factory
    takes the kept state_dict, and encodes as the fleet does."""
    from tests.own_models import mlp_vae

    fleet = Fleet([Member("a", MLP, 0), Member("b", replace(MLP, activation="snake"), 1)], SHAPE)
    x = tiny_data.x_train[:5]
    mu, _ = fleet.encode(x)
    row = fleet.keys.index("b")
    fresh = mlp_vae(lambda: plugin.Unit("snake"), 4, SHAPE, width=32)
    fresh.load_state_dict(member_weights(fleet, row))
    torch.testing.assert_close(fresh.encode(x.view(-1, *SHAPE))[0], mu[row], rtol=1e-5, atol=1e-6)
    relu_row = fleet.keys.index("a")
    plain = mlp_vae(torch.nn.ReLU, 4, SHAPE, width=32)  # ablate's relu is torch's: no state of its own
    plain.load_state_dict(member_weights(fleet, relu_row))
    torch.testing.assert_close(plain.encode(x.view(-1, *SHAPE))[0], mu[relu_row], rtol=1e-5, atol=1e-6)


def test_dead_units_count_each_members_own_units(tiny_data):
    fleet = Fleet([Member("a", MLP, 0), Member("w", replace(MLP, options='{"width": 48}'), 1)], SHAPE)
    hidden: list = []
    mu, _ = fleet.encode(tiny_data.x_train[:40], hidden)
    fleet.decode(mu, hidden)
    real = fleet.model.real_units()
    assert [h.shape for h in hidden] == [(2, 2, 48), (2, 2, 48)]
    assert real.sum(1).tolist() == [64, 96]


@pytest.mark.parametrize("factory,config,pattern", [
    ("tests.own_models:nowhere", {}, "module 'tests.own_models' has no attribute 'nowhere'"),
    ("tests.own_models:raises", {}, "raised ValueError: width must be a power of two"),
    ("tests.own_models:not_a_module", {}, "it must return a torch.nn.Module"),
    ("tests.own_models:no_decode", {}, "without decode; a VAE needs encode() and decode()"),
    ("tests.own_models:wrong_shape", {}, "decode() returned shape (2, 63)"),
    ("tests.own_models:nan_forward", {}, "encode() gave non-finite values"),
    ("tests.own_models:batchnorm", {}, "layer 'encoder.2' (BatchNorm1d) keeps running statistics"),
    ("tests.own_models:dropout", {}, "layer 'encoder.3' (Dropout)"),
    ("tests.own_models:counting", {}, "writes its buffer 'calls' during a forward"),
    ("tests.own_models:noisy", {}, "cannot run together under torch.func.vmap"),
    ("tests.own_models:shared_gan", {"family": "gan"}, "parameter 'tied.weight' is used by both"),
    ("tests.own_models:mlp_vae", {"options": '{"depth": 3}'}, "unexpected keyword argument 'depth'"),
])
def test_a_bad_module_is_one_error_before_training(factory, config, pattern):
    with pytest.raises(UserError) as caught:
        plugin.check([RunConfig(module=factory, latent_dim=2, **config)], SHAPE)
    message = str(caught.value)
    assert pattern in message and len(message.splitlines()) == 1, message
    assert f"'{factory}'" in message
