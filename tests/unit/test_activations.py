"""One suite over every registered activation, plus plugins."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from ablate.errors import UserError
from ablate.nets.activations import ACTIVATIONS, INIT_SCHEMES
from ablate.nets.layers import init_weight
from ablate.nets.nonlinear import get_activation


ELEMENTWISE = [n for n in ACTIVATIONS.names() if ACTIVATIONS.get(n).pieces == 1]


def test_every_activation_but_maxout_is_elementwise():
    assert set(ACTIVATIONS.names()) - set(ELEMENTWISE) == {"maxout"}


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_is_elementwise_finite_and_differentiable(name):
    act = get_activation(name)
    assert act.init in INIT_SCHEMES
    x = torch.linspace(-3, 3, 2 * 5 * 7).view(2, 5, 7).requires_grad_(True)
    params = {k: v.requires_grad_(True) for k, v in act.initial(2, 7).items()}
    y = act.apply(x, params)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # elementwise: the first member's output does not depend on the second member's input
    x2 = x.detach().clone()
    x2[1] += 1.0
    torch.testing.assert_close(act.apply(x2, params)[0], y[0].detach())
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in params.values():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_learnable_activations_have_parameters():
    assert set(get_activation("prelu").params) == {"slope"}
    assert set(get_activation("swish").params) == {"beta"}


def test_unknown_activation_suggests_and_lists():
    with pytest.raises(UserError, match=r"unknown activation 'rleu'\. Did you mean 'relu'\?.*Known: .*gelu"):
        get_activation("rleu")


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "myacts.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Snake(nn.Module):
            def __init__(self):
                super().__init__()
                self.alpha = nn.Parameter(torch.tensor(1.0))
            def forward(self, x):
                return x + torch.sin(self.alpha * x) ** 2 / self.alpha

        def make_snake():
            return Snake()
        make_snake.init = "kaiming"

        def make_square():
            return lambda x: x * x
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myacts"
    sys.modules.pop("myacts", None)


def test_plugin_with_parameters_is_per_member(plugin_module):
    act = get_activation("myacts:make_snake")
    assert act.init == "kaiming" and set(act.params) == {"alpha"}
    alpha = torch.tensor([1.0, 2.0], requires_grad=True)
    x = torch.ones(2, 3, 4)
    y = act.apply(x, {"alpha": alpha})
    expected0 = 1 + torch.sin(torch.tensor(1.0)) ** 2
    expected1 = 1 + torch.sin(torch.tensor(2.0)) ** 2 / 2
    torch.testing.assert_close(y[0], expected0.expand(3, 4))
    torch.testing.assert_close(y[1], expected1.expand(3, 4))


def test_plugin_without_parameters(plugin_module):
    act = get_activation("myacts:make_square")
    torch.testing.assert_close(act.apply(torch.full((1, 2, 2), 3.0), {}), torch.full((1, 2, 2), 9.0))


def test_bad_plugin_paths():
    with pytest.raises(UserError, match="cannot import module 'nosuchpkg.mod'"):
        get_activation("nosuchpkg.mod:Factory")
    with pytest.raises(UserError, match="has no attribute 'Nope'"):
        get_activation("torch.nn:Nope")


@pytest.mark.parametrize("scheme,expected_std", [("kaiming", 2 ** 0.5 / 20), ("lecun", 1 / 20)])
def test_init_scales(scheme, expected_std):
    w, b = init_weight(scheme, 2 ** 0.5, (400, 300), 400, 300, 300, torch.Generator().manual_seed(0))
    assert w.std().item() == pytest.approx(expected_std, rel=0.02)
    assert torch.count_nonzero(b) == 0


def test_default_init_is_torch_linear():
    w, b = init_weight("default", 1.0, (100, 50), 100, 50, 50, torch.Generator().manual_seed(0))
    assert w.abs().max() <= 0.1 and b.abs().max() <= 0.1 and w.abs().max() > 0.09


def test_rational_starts_as_leaky_relu_within_002_on_minus3_3():
    act = get_activation("rational")
    x = torch.linspace(-3, 3, 601).view(1, 1, -1)
    y = act.apply(x, act.initial(1, 601))
    assert (y - torch.nn.functional.leaky_relu(x, 0.01)).abs().max() <= 0.02


def test_per_unit_parameters_have_one_value_per_unit_and_channel():
    snake, apl = get_activation("snake"), get_activation("apl")
    assert snake.initial(3, 5)["alpha"].shape == (3, 5)
    assert apl.initial(3, 5)["a"].shape == (3, 2, 5)
    alpha = torch.tensor([[1.0, 2.0]])  # one member, two channels
    maps = torch.ones(1, 4, 2, 3, 3)  # (G, B, C, H, W)
    y = snake.apply(maps, {"alpha": alpha})
    torch.testing.assert_close(y[0, :, 1], (1 + torch.sin(torch.tensor(2.0)) ** 2 / 2).expand(4, 3, 3))


def test_siren_init_bounds():
    gen = torch.Generator().manual_seed(0)
    first, _ = init_weight("siren", 1.0, (64, 100), 64, 100, 100, gen, first=True)
    later, _ = init_weight("siren", 1.0, (100, 100), 100, 100, 100, gen)
    assert first.abs().max() <= 1 / 64 and first.abs().max() > 0.9 / 64
    assert later.abs().max() <= (6 / 100) ** 0.5 / 30 and later.abs().max() > 0.9 * (6 / 100) ** 0.5 / 30


@pytest.fixture
def hostile_plugins(tmp_path, monkeypatch):
    (tmp_path / "badacts.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def glu():
            return nn.GLU(dim=-1)
        def softmax():
            return nn.Softmax(dim=-1)
        def raises():
            raise RuntimeError("factory broke")
        def not_finite():
            return lambda x: torch.log(x)
        def not_a_tensor():
            return lambda x: 3
        def fails_on_call():
            return lambda x: x @ torch.ones(2, 2)
        """))
    (tmp_path / "explodes.py").write_text("raise ValueError('module broke on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("badacts", "explodes"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("path,pattern", [
    ("badacts:glu", r"turns a \(2, 4, 6\) tensor into \(2, 4, 3\)"),
    ("badacts:softmax", r"is not elementwise: changing one input changed 5 other outputs"),
    ("badacts:raises", r"calling the factory raised RuntimeError: factory broke"),
    ("badacts:not_finite", r"gives non-finite values"),
    ("badacts:not_a_tensor", r"turns a \(2, 4, 6\) tensor into int"),
    ("badacts:fails_on_call", r"fails on a \(2, 4, 6\) tensor with RuntimeError"),
    ("explodes:anything", r"importing 'explodes:anything' raised ValueError: module broke on import"),
])
def test_a_plugin_is_probed_before_training(hostile_plugins, path, pattern):
    from ablate.nets.nonlinear import probe

    with pytest.raises(UserError, match=pattern):
        probe(path)


def test_a_good_plugin_passes_the_probe(plugin_module):
    from ablate.nets.nonlinear import probe

    probe("myacts:make_snake")
    probe("myacts:make_square")


def test_acon_starts_as_silu_and_switches_between_linear_and_max():
    acon = get_activation("acon")
    x = torch.linspace(-3, 3, 12).view(1, 2, 6)
    torch.testing.assert_close(acon.apply(x, acon.initial(1, 6)), torch.nn.functional.silu(x))
    p1, p2 = torch.full((1, 6), 1.5), torch.full((1, 6), 0.25)
    flat = acon.apply(x, {"p1": p1, "p2": p2, "beta": torch.zeros(1, 6)})
    torch.testing.assert_close(flat, (p1.unsqueeze(1) + p2.unsqueeze(1)) / 2 * x)  # β = 0: the mean
    steep = acon.apply(x, {"p1": p1, "p2": p2, "beta": torch.full((1, 6), 1e4)})
    torch.testing.assert_close(steep, torch.maximum(1.5 * x, 0.25 * x))  # β → ∞: the max


def test_meta_acons_switch_is_computed_from_each_input():
    from ablate.nets.nonlinear import meta_beta

    act = get_activation("meta_acon")
    params = act.initial(1, 6)
    x = torch.randn(1, 2, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(meta_beta(x, params["w1"], params["w2"]), torch.full((1, 2, 6), 0.5))  # Σ W₁W₂ = 0
    params["w2"] = torch.randn(params["w2"].shape, generator=torch.Generator().manual_seed(1))
    beta = meta_beta(x, params["w1"], params["w2"])
    assert not torch.allclose(beta[0, 0], beta[0, 1]), "two examples, two switches"
    other = meta_beta(x * 2.0, params["w1"], params["w2"])
    assert not torch.allclose(other, beta), "another input, another switch"
    maps = x.view(1, 2, 6, 1, 1).expand(1, 2, 6, 3, 3)  # a channel's maps: β from their mean
    torch.testing.assert_close(meta_beta(maps, params["w1"], params["w2"]), beta[..., None, None])
    assert act.apply(x * 2.0, params).sub(2.0 * act.apply(x, params)).abs().max() > 1e-4, "not linear"


def test_blend_is_a_convex_mix_of_its_bases():
    from ablate.nets.nonlinear import BLEND_BASES

    act = get_activation("blend")
    x = torch.linspace(-3, 3, 14).view(1, 2, 7)
    bases = [g(x) for _, g in BLEND_BASES]
    torch.testing.assert_close(act.apply(x, act.initial(1, 7)), sum(bases) / len(bases))
    relu_only = torch.full((1, len(BLEND_BASES)), -30.0)
    relu_only[0, [n for n, _ in BLEND_BASES].index("relu")] = 30.0
    torch.testing.assert_close(act.apply(x, {"logits": relu_only}), torch.relu(x))


def test_maxout_keeps_the_max_of_each_units_consecutive_pieces():
    for name, k in (("maxout", 2), ("maxout:3", 3), ("maxout:8", 8)):
        act = get_activation(name)
        assert act.pieces == k and not act.learnable
        x = torch.randn(2, 5, 4 * k)
        torch.testing.assert_close(act.apply(x, {}), x.view(2, 5, 4, k).max(-1).values)
        maps = torch.randn(2, 3, 4 * k, 6, 5)  # channels: unit c's pieces are channels c·k … c·k + k − 1
        torch.testing.assert_close(act.apply(maps, {}), maps.view(2, 3, 4, k, 6, 5).max(3).values)


@pytest.mark.parametrize("name,pattern", [("maxout:1", "from 2 to 8"), ("maxout:9", "from 2 to 8"),
                                          ("maxout:x", "whole number"), ("maxout:", "whole number")])
def test_maxout_pieces_out_of_range_are_refused(name, pattern):
    with pytest.raises(UserError, match=pattern):
        get_activation(name)


def test_a_layer_records_each_members_acon_switch_over_training_passes_only():
    """acon's β (per unit) and meta_acon's (per example, from its own network) are averaged over
    a member's real units and examples and over the passes with gradients on (training)."""
    from ablate.nets.layers import Nonlinear
    from ablate.nets.nonlinear import meta_beta

    acon, meta = get_activation("acon"), get_activation("meta_acon")
    layer = Nonlinear([(acon, 0, 2), (meta, 2, 3)], 6, real=[4, 6, 5])
    layer.place(torch.device("cpu"))
    with torch.no_grad():
        for slot in layer.slots.values():
            slot.tensor.normal_(generator=torch.Generator().manual_seed(1))
    xs = [torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(s)) for s in (2, 3)]
    expected, per_unit = {0: [], 1: [], 2: []}, []
    for x in xs:
        beta = layer.slots["acon.beta"].tensor.detach()
        expected[0].append(beta[0, :4].mean())
        expected[1].append(beta[1, :6].mean())
        w1, w2 = layer.slots["meta_acon.w1"].tensor.detach(), layer.slots["meta_acon.w2"].tensor.detach()
        real = x[2:3, :, :5]  # its padded unit is zero going in, and not averaged
        beta = meta_beta(torch.cat([real, torch.zeros(1, 7, 1)], -1), w1, w2)[0, :, :5]
        expected[2].append(beta.mean())
        per_unit.append(beta.mean(0))
        layer(x)
    with torch.no_grad():
        layer(xs[0] * 10)  # an evaluation pass: not counted
    got = layer.take_switches()
    for i in range(3):
        assert got[i] == pytest.approx(float(torch.stack(expected[i]).mean()), rel=1e-5), i
    # each real unit's mean β (what meta_acon's learned shape is drawn with)
    torch.testing.assert_close(layer.unit_switch[2], torch.stack(per_unit).mean(0))
    assert layer.unit_switch[0].shape == (4,)
    assert layer.take_switches() == {}, "taking starts a new epoch"


def test_a_members_recorded_switches_and_mixture_do_not_depend_on_its_cohort(tiny_data):
    from ablate.study.schema import RunConfig
    from ablate.training.fleet import Member
    from ablate.training.loop import train_cohort

    def member(key, seed, activation, hidden, decoder=None):
        return Member(key, RunConfig(hidden=hidden, epochs=2, batch_size=64, activation=activation,
                                     decoder_activation=decoder), seed)

    target = member("t", 1, "meta_acon", (24,), "blend")
    others = [member("a", 0, "acon", (40,), "blend"), member("b", 2, "relu", (32,), "meta_acon")]
    alone = train_cohort([target], tiny_data, iwae_samples=5)["t"].history
    crowd = train_cohort(others + [target], tiny_data, iwae_samples=5)["t"].history
    for ra, rc in zip(alone, crowd):
        traced = {k for k in ra if k.startswith(("beta_", "mix_"))}
        assert traced == {"beta_enc.0", *(f"mix_{b}_dec.0" for b in ("identity", "relu", "tanh", "elu", "silu"))}
        for k in traced:
            assert rc[k] == pytest.approx(ra[k], rel=1e-4), k
    assert sum(alone[-1][f"mix_{b}_dec.0"] for b in ("identity", "relu", "tanh", "elu", "silu")) == pytest.approx(1.0)
