"""train.dtype: bf16 autocasts a training step's matmuls and convolutions, keeps weights,
losses and Adam state in float32, never touches evaluation, and trains to the same numbers as
fp32 within seed noise."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ablate.study.schema import RunConfig
from ablate.training.fleet import Fleet, Member
from ablate.training.loop import train_cohort

MLP = RunConfig(hidden=(32,), latent_dim=4, epochs=6, batch_size=32)


def _one_step(config: RunConfig, data) -> Fleet:
    fleet = Fleet([Member("a", config, 0), Member("b", replace(config, activation="tanh"), 1)],
                  data.shape or data.x_train.shape[1])
    x = data.x_train[:32].expand(2, -1, -1)
    loss, _, _ = fleet.train_step(x, torch.randn(2, 32, fleet.latent, generator=torch.Generator().manual_seed(0)),
                                  fleet.beta(0, 1))
    assert torch.isfinite(loss).all() and loss.dtype == torch.float32
    return fleet


def test_bf16_changes_the_step_but_keeps_float32_weights_and_adam_state(tiny_data):
    full, half = _one_step(MLP, tiny_data), _one_step(replace(MLP, dtype="bf16"), tiny_data)
    for name, s in half.slots.items():
        assert s.tensor.dtype == s.exp_avg.dtype == s.exp_avg_sq.dtype == torch.float32, name
    moved = [float((half.slots[k].exp_avg - s.exp_avg).abs().max() / s.exp_avg.abs().max())
             for k, s in full.slots.items()]
    assert 0 < max(moved) < 0.1, "bf16 rounds the gradients a little, not a lot"


def test_every_kind_of_model_takes_a_bf16_step(tiny_data):
    for config in (RunConfig(arch="conv", channels=(8,), hidden=(), latent_dim=4, dtype="bf16"),
                   replace(MLP, family="gan", dtype="bf16"),
                   RunConfig(module="tests.own_models:mlp_vae", latent_dim=4, dtype="bf16")):
        _one_step(config, tiny_data)


def test_bf16_trains_within_seed_noise_of_fp32(tiny_data):
    nll = {}
    for dtype in ("fp32", "bf16"):
        config = replace(MLP, dtype=dtype)
        out = train_cohort([Member(f"s{s}", config, s) for s in range(6)], tiny_data, iwae_samples=10)
        nll[dtype] = torch.tensor([o.metrics["test_nll"] for o in out.values()])
    a, b = nll["fp32"], nll["bf16"]
    assert not torch.equal(a, b)
    assert abs(float(a.mean() - b.mean())) < 3 * math.sqrt(a.var() / len(a) + b.var() / len(b)), nll
