"""The fleet's conv VAE reproduces a plain one-model `nn.Conv2d` PyTorch loop within seed noise.

Same data (8×8 digits upsampled to 28×28), same model (Conv2d(1→32→64, k=4, s=2, p=1) with
ReLU, 28 → 14 → 7; μ and log σ² heads from the 64·7·7 features; the mirror image with
ConvTranspose2d back to Bernoulli logits), same hyperparameters (latent 16, BCE, Adam 1e-3,
batch 128, PyTorch's default init — `model.init: default`): three seeds of each, and the
difference of the mean test losses must lie within the seeds' own spread. Seeds spread widely
after a few epochs, so a second test pins the model itself: one member's weights copied into
the `nn.Module` give the same loss and the same gradients on the same batch and noise."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ablate.study.schema import RunConfig
from ablate.training.fleet import Fleet, Member
from ablate.training.loop import train_cohort
from ablate.training.splits import DeviceData
from tests.integration.test_reference import upsampled_digits

EPOCHS, SEEDS, LATENT = 6, (0, 1, 2), 16


class ConvVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1),
                                 nn.ReLU(), nn.Flatten())
        self.mu, self.logvar = nn.Linear(64 * 7 * 7, LATENT), nn.Linear(64 * 7 * 7, LATENT)
        self.dec = nn.Sequential(nn.Linear(LATENT, 64 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                                 nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(32, 1, 4, 2, 1))

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(z), mu, logvar


def loss_function(logits, x, mu, logvar):
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def textbook(seed: int, x_train: torch.Tensor, x_test: torch.Tensor) -> float:
    torch.manual_seed(seed)
    model = ConvVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = lambda x: x.view(-1, 1, 28, 28)  # noqa: E731
    loader = DataLoader(TensorDataset(images(x_train)), batch_size=128, shuffle=True)
    for _ in range(EPOCHS):
        for (x,) in loader:
            opt.zero_grad()
            logits, mu, logvar = model(x)
            loss_function(logits, x, mu, logvar).backward()
            opt.step()
    with torch.no_grad():
        x = images(x_test)
        logits, mu, logvar = model(x)
        return loss_function(logits, x, mu, logvar).item() / len(x)


def test_conv_fleet_matches_textbook_conv_loop_within_seed_noise():
    x_train, x_test = upsampled_digits()
    ref = np.array([textbook(s, x_train, x_test) for s in SEEDS])

    config = RunConfig(activation="relu", arch="conv", channels=(32, 64), hidden=(),
                       latent_dim=LATENT, kl_weight=1.0, epochs=EPOCHS, batch_size=128, lr=1e-3,
                       init="default")
    data = DeviceData(x_train, x_test, None, None, shape=(1, 28, 28))
    out = train_cohort([Member(f"s{s}", config, s) for s in SEEDS], data, iwae_samples=5)
    ours = np.array([out[f"s{s}"].metrics["test_nelbo"] for s in SEEDS])

    noise = math.sqrt(ref.var(ddof=1) / len(SEEDS) + ours.var(ddof=1) / len(SEEDS))
    gap = abs(ours.mean() - ref.mean())
    # within 3 standard errors of the difference, or 0.5% when both are very consistent
    assert gap <= max(3 * noise, 0.005 * ref.mean()), (ref, ours)


def test_a_conv_member_is_the_textbook_model():
    """Member 1 of a two-member fleet, copied into ConvVAE: same loss, same gradients."""
    x = upsampled_digits()[0][:32]
    config = RunConfig(activation="relu", arch="conv", channels=(32, 64), hidden=(),
                       latent_dim=LATENT, init="default")
    fleet = Fleet([Member("a", config, 0), Member("b", config, 1)], (1, 28, 28))
    s = {k: v.tensor for k, v in fleet.slots.items()}
    model = ConvVAE()
    with torch.no_grad():
        for layer, name in ((model.enc[0], "conv.0"), (model.enc[2], "conv.1"),
                            (model.dec[3], "deconv.0"), (model.dec[5], "deconv.1")):
            layer.weight.copy_(s[f"{name}.w"][1])
            layer.bias.copy_(s[f"{name}.b"][1])
        model.mu.weight.copy_(s["head.w"][1, :, :LATENT].T)
        model.mu.bias.copy_(s["head.b"][1, 0, :LATENT])
        model.logvar.weight.copy_(s["head.w"][1, :, LATENT:].T)
        model.logvar.bias.copy_(s["head.b"][1, 0, LATENT:])
        model.dec[0].weight.copy_(s["proj.w"][1].T)
        model.dec[0].bias.copy_(s["proj.b"][1, 0])
    eps = torch.randn(2, 32, LATENT, generator=torch.Generator().manual_seed(5))
    loss, _, _ = fleet.loss(x.expand(2, -1, -1), eps, torch.ones(2))
    loss[1].backward()

    h = model.enc(x.view(-1, 1, 28, 28))
    mu, logvar = model.mu(h), model.logvar(h)
    logits = model.dec(mu + eps[1] * torch.exp(0.5 * logvar))
    ref = loss_function(logits, x.view(-1, 1, 28, 28), mu, logvar) / len(x)
    ref.backward()
    torch.testing.assert_close(loss[1], ref.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(s["conv.0.w"].grad[1], model.enc[0].weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s["deconv.1.w"].grad[1], model.dec[5].weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s["head.w"].grad[1, :, :LATENT].T, model.mu.weight.grad, rtol=1e-4, atol=1e-5)
    assert torch.count_nonzero(s["conv.0.w"].grad[0]) == 0  # member 0's loss was not backpropagated
