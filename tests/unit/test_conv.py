"""The conv model in the fleet: shapes, init, and the fleet's invariants for convolutions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ablate.nets.layers import Conv, stacked
from ablate.nets.models import conv_sizes, param_count
from ablate.study.schema import RunConfig
from ablate.training.evaluation import evaluate_split
from ablate.training.fleet import Fleet, Member
from ablate.training.loop import train_cohort
from tests.members import RTOL, assert_same_numbers

METRICS = ("test_nelbo", "test_recon", "test_kl", "test_nll", "mutual_info", "active_units",
           "dead_units")
SHAPE = (1, 8, 8)


def member(key, seed=0, **kw) -> Member:
    base = {"arch": "conv", "channels": (8, 16), "hidden": (), "epochs": 3, "batch_size": 64}
    return Member(key, RunConfig(**{**base, **kw}), seed)


@pytest.mark.parametrize("size,channels", [((28, 28), (32, 64)), ((7, 7), (4, 4)),
                                           ((8, 6), (3,)), ((32, 32), (4, 4, 4))])
def test_decoder_output_has_exactly_the_input_size(size, channels):
    shape = (3, *size)
    fleet = Fleet([member("a", channels=channels, hidden=(12,))], shape)
    x = torch.rand(5, math.prod(shape))
    mu, logvar = fleet.encode(x)
    assert fleet.decode(mu).shape == (1, 5, math.prod(shape))
    assert conv_sizes(shape, channels)[0] == size
    n_params = sum(s.tensor[0].numel() for s in fleet.slots.values())
    assert param_count(fleet.members[0].config, shape) == n_params


def test_too_many_convolutions_for_the_image_is_an_error():
    with pytest.raises(ValueError, match="halves to 1×1 after 3 convolutions"):
        conv_sizes((1, 8, 8), (4, 4, 4, 4))


def test_default_init_is_pytorchs_conv_init():
    """init: default draws from PyTorch's own bounds: U(±1/√(c_in·k²)) for Conv2d and
    U(±1/√(c_out·k²)) for ConvTranspose2d (PyTorch's fan-in of its (in, out, k, k) weight)."""
    gen = torch.Generator().manual_seed(0)
    for layer, ref in ((Conv(1, 16, 32), nn.Conv2d(16, 32, 4, 2, 1)),
                       (Conv(1, 32, 16, transposed=True), nn.ConvTranspose2d(32, 16, 4, 2, 1))):
        layer.init_member(0, gen, "default", 1.0)
        w, b = layer.values["w"][0], layer.values["b"][0]
        assert w.shape == ref.weight.shape and b.shape == ref.bias.shape
        bound = 1 / math.sqrt(ref.weight[0].numel() if isinstance(ref, nn.Conv2d)
                              else ref.weight.shape[1] * 16)
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
        assert b.abs().max() <= bound


def test_auto_init_uses_the_convolutions_fan_in():
    """kaiming (ReLU): std √2/√fan_in with fan_in c_in·k² (conv), c_in·k²/4 (stride-2 transposed)."""
    gen = torch.Generator().manual_seed(0)
    conv, deconv = Conv(1, 32, 64), Conv(1, 64, 32, transposed=True)
    conv.init_member(0, gen, "kaiming", math.sqrt(2))
    deconv.init_member(0, gen, "kaiming", math.sqrt(2))
    assert conv.values["w"].std().item() == pytest.approx(math.sqrt(2 / (32 * 16)), rel=0.03)
    assert deconv.values["w"].std().item() == pytest.approx(math.sqrt(2 / (64 * 4)), rel=0.03)


def test_conv_member_alone_equals_member_in_heterogeneous_cohort(tiny_data):
    target = member("target", seed=1, activation="gelu", latent_dim=4, kl_weight=1.0, hidden=(16,))
    others = [member("o1", seed=0, activation="relu", latent_dim=8, kl_weight=0.5, hidden=(16,)),
              member("o2", seed=2, activation="tanh", latent_dim=2, kl_weight=4.0, hidden=(24,)),
              member("o3", seed=1, activation="prelu", latent_dim=6, hidden=(8,), lr=3e-3),
              member("o4", seed=3, activation="swish", latent_dim=4, kl_weight=2.0, hidden=(16,))]
    alone = train_cohort([target], tiny_data, iwae_samples=10)["target"]
    crowd = train_cohort(others + [target], tiny_data, iwae_samples=10)["target"]
    assert_same_numbers(alone, crowd, METRICS)


def test_conv_padded_latent_and_hidden_get_zero_gradient_and_stay_zero(tiny_data):
    small = member("small", latent_dim=2, hidden=(8,), activation="sigmoid")
    big = member("big", seed=1, latent_dim=6, hidden=(16,), activation="sigmoid")
    fleet = Fleet([small, big], SHAPE)
    i, L = fleet.keys.index("small"), fleet.latent

    def padded(t):
        return [t["enc.0.w"][i, :, 8:], t["enc.0.b"][i, :, 8:], t["head.w"][i, 8:, :],
                t["head.w"][i, :, 2:L], t["head.w"][i, :, L + 2:], t["head.b"][i, :, 2:L],
                t["dec.0.w"][i, 2:, :], t["dec.0.w"][i, :, 8:], t["dec.0.b"][i, :, 8:],
                t["proj.w"][i, 8:, :]]

    perms, eps = fleet.epoch_draws(len(tiny_data.x_train))
    for step in range(5):
        idx = perms[:, step * 32:(step + 1) * 32]
        loss, _, _ = fleet.loss(tiny_data.x_train[idx], eps[:, step * 32:(step + 1) * 32],
                                fleet.beta(step, 10))
        for p in fleet.parameters():
            p.grad = None
        loss.sum().backward()
        values = {k: s.tensor for k, s in fleet.slots.items()}
        grads = {k: s.tensor.grad for k, s in fleet.slots.items()}
        for part, grad in zip(padded(values), padded(grads)):
            assert torch.count_nonzero(grad) == 0 and torch.count_nonzero(part) == 0
        fleet.adam_step()
    assert all(torch.count_nonzero(p) == 0 for p in padded({k: s.tensor for k, s in fleet.slots.items()}))


def test_conv_nan_member_fails_alone_and_others_keep_their_numbers(tiny_data):
    healthy = [member("h1", activation="relu"), member("h2", seed=1, activation="tanh")]
    doomed = member("doomed", seed=2, activation="exponential", lr=50.0)
    without = train_cohort(healthy, tiny_data, iwae_samples=10)
    together = train_cohort(healthy + [doomed], tiny_data, iwae_samples=10)
    assert together["doomed"].status == "failed" and together["doomed"].fail_epoch is not None
    for key in ("h1", "h2"):
        assert together[key].status == "ok"
        for m in METRICS:
            assert together[key].metrics[m] == pytest.approx(without[key].metrics[m], rel=RTOL, abs=1e-6)


def test_conv_dead_units_are_channels(tiny_data):
    """A channel whose maps are constant over every test image and position is dead: a conv
    whose filters are zeroed (with a negative bias, under ReLU) kills its channels."""
    fleet = Fleet([member("r", activation="relu", channels=(4, 8))], SHAPE)
    with torch.no_grad():
        fleet.slots["conv.1.w"].tensor[0, :2].zero_()
        fleet.slots["conv.1.b"].tensor[0, :2] = -1.0
    with torch.no_grad():
        row = evaluate_split(fleet, tiny_data.x_test, 2)[0]["r"]
    units = 4 + 8 + 8 + 4  # conv channels, projection's channels, between the transposed convs
    assert row["dead_units"] == pytest.approx(2 / units)


def test_cohorts_split_by_arch_and_channels():
    conv = RunConfig(arch="conv", channels=(8, 16))
    assert conv.cohort_key != RunConfig(arch="conv", channels=(8, 32)).cohort_key
    assert conv.cohort_key != RunConfig(arch="mlp").cohort_key
    assert RunConfig(channels=(8,)).cohort_key == RunConfig().cohort_key  # mlp: channels unused


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_learnable_activation_parameters_train_and_differ_between_members(tiny_data, arch):
    """rational and blend (per layer), snake, apl, acon and meta_acon (per unit or channel):
    each member's copy moves away from its initial value in training, and two members' copies
    end apart."""
    kw = {"hidden": (16,)} if arch == "mlp" else {}
    members = [member(f"{a}{s}", seed=s, activation=a, arch=arch, epochs=1, **kw)
               for a in ("rational", "snake", "apl", "acon", "meta_acon", "blend") for s in (0, 1)]
    fleet = Fleet(members, SHAPE)
    start = {k: s.tensor.detach().clone() for k, s in fleet.slots.items() if k.startswith("act.")}
    assert {k.split(".", 2)[2] for k in start} == {
        "rational.p", "rational.q", "snake.alpha", "apl.a", "apl.b", "acon.p1", "acon.p2", "acon.beta",
        "meta_acon.p1", "meta_acon.p2", "meta_acon.w1", "meta_acon.w2", "blend.logits"}
    perms, eps = fleet.epoch_draws(len(tiny_data.x_train))
    for step in range(4):
        idx = perms[:, step * 64:(step + 1) * 64]
        fleet.train_step(tiny_data.x_train[idx], eps[:, step * 64:(step + 1) * 64], fleet.beta(step, 4))
    for k, before in start.items():
        after = fleet.slots[k].tensor.detach()
        assert not torch.equal(after, before), k
        assert not torch.equal(after[0], after[1]), k  # the two seeds of one activation


@pytest.mark.parametrize("transposed", [False, True])
def test_both_conv_strategies_compute_the_same_layer(transposed):
    layer = Conv(3, 4, 6, transposed)
    for i in range(3):
        layer.init_member(i, torch.Generator().manual_seed(i), "kaiming", math.sqrt(2))
    layer.place(torch.device("cpu"))
    x = torch.randn(3, 5, 4, 8, 8)
    outs, grads = {}, {}
    for strategy in ("grouped", "members"):
        layer.strategy = strategy
        out = stacked(layer(x))  # the per-member strategy gives the members' maps as a list
        out.square().sum().backward()
        outs[strategy], grads[strategy] = out.detach(), layer.slots["w"].tensor.grad.clone()
        layer.slots["w"].tensor.grad = None
    torch.testing.assert_close(outs["members"], outs["grouped"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads["members"], grads["grouped"], rtol=1e-4, atol=1e-4)


def test_tuning_keeps_the_faster_strategy_and_leaves_no_gradient():
    """The timer is the test's: 'members' costs 1 s a run, 'grouped' 2 s."""
    layer = Conv(2, 1, 4)
    layer.place(torch.device("cpu"))
    clock = iter(range(10_000))
    ticks = {"grouped": 2, "members": 1}
    timer = lambda: next(clock) * ticks[layer.strategy]  # noqa: E731
    seconds = layer.tune((2, 3, 1, 8, 8), timer=timer)
    assert layer.strategy == "members" and set(seconds) == {"grouped", "members"}
    assert all(s.tensor.grad is None for s in layer.slots.values())


def test_a_cohort_runs_its_convolutions_as_a_checkpoint_saved_them(tiny_data):
    fleet = Fleet([member("a"), member("b", activation="tanh")], SHAPE)
    assert set(fleet.model.tune(16)) == {"conv.0", "conv.1", "deconv.0", "deconv.1"}
    chosen = {k: "members" for k in fleet.model.strategies()}
    fleet.model.use(chosen)
    assert fleet.model.strategies() == chosen
    x = tiny_data.x_train[:16].expand(2, -1, -1)  # each member its own batch: the strategies apply
    mu_members = fleet.encode(x)[0]
    fleet.model.use({k: "grouped" for k in chosen})
    torch.testing.assert_close(fleet.encode(x)[0], mu_members, rtol=1e-5, atol=1e-5)


def test_members_feature_maps_kept_apart_give_the_stacked_numbers(tiny_data):
    """With the per-member strategy the maps between convolutions stay a list (no copies); a
    cohort of mixed, learnable activations computes the same codes, images and gradients as
    with every map stacked, and records the same hidden units."""
    members = [member("a", activation="prelu"), member("b", seed=1, activation="tanh"),
               member("c", seed=2, activation="snake")]
    fleet = Fleet(members, SHAPE)
    x = tiny_data.x_train[:8].expand(3, -1, -1)
    results = {}
    for strategy in ("grouped", "members"):
        fleet.model.use({k: strategy for k in fleet.model.strategies()})
        mu, _ = fleet.encode(x)
        out = fleet.decode(mu)
        (out.square().sum() + mu.sum()).backward()
        hidden: list = []
        fleet.encode(x, hidden)
        results[strategy] = (mu.detach(), out.detach(), {k: s.tensor.grad.clone() for k, s in fleet.slots.items()},
                             [h.detach() for h in hidden])
        for s in fleet.slots.values():
            s.tensor.grad = None
    (mu_g, out_g, grads_g, hid_g), (mu_m, out_m, grads_m, hid_m) = results["grouped"], results["members"]
    torch.testing.assert_close(mu_m, mu_g, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_m, out_g, rtol=1e-5, atol=1e-5)
    for k in grads_g:
        torch.testing.assert_close(grads_m[k], grads_g[k], rtol=1e-4, atol=1e-4, msg=k)
    for a, b in zip(hid_m, hid_g):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
