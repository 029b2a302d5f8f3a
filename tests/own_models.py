"""Users' own models for the tests of model.module (nets/plugin.py): good ones of every kind of
family, and the bad ones a researcher might write. Each is a factory
`f(activation, latent_dim, shape, **options)`."""

from __future__ import annotations

import math

import torch
from torch import nn

from examples.mlp_vae import MLPVAE as BuiltIn


class MLPVAE(BuiltIn):
    """ablate's built-in MLP VAE (one hidden layer each side, examples/mlp_vae.py)."""

    def __init__(self, activation, latent_dim, shape, width=32):
        super().__init__(activation, latent_dim, shape, hidden=(width,))


def mlp_vae(activation, latent_dim, shape, **options):
    return MLPVAE(activation, latent_dim, shape, **options)


class MLPAE(MLPVAE):
    """The same layers as a deterministic autoencoder: encode(x) → z."""

    def __init__(self, activation, latent_dim, shape, width=32):
        super().__init__(activation, latent_dim, shape, width)
        self.head = nn.Linear(width, latent_dim)

    def encode(self, x):
        return self.head(self.encoder(x))


def mlp_ae(activation, latent_dim, shape, **options):
    return MLPAE(activation, latent_dim, shape, **options)


class GAN(nn.Module):
    """A small MLP GAN: generate(z) → logits, discriminate(x) → logits."""

    def __init__(self, activation, latent_dim, shape, width=32):
        super().__init__()
        d = math.prod(shape)
        self.shape = tuple(shape)
        self.generator = nn.Sequential(nn.Linear(latent_dim, width), activation(), nn.Linear(width, d))
        self.critic = nn.Sequential(nn.Flatten(), nn.Linear(d, width), activation(), nn.Linear(width, 1))

    def generate(self, z):
        return self.generator(z).view(-1, *self.shape)

    def discriminate(self, x):
        return self.critic(x)[:, 0]


def gan(activation, latent_dim, shape, **options):
    return GAN(activation, latent_dim, shape, **options)


# ------------------------------------------------------------------------- bad ones
def raises(activation, latent_dim, shape, **options):
    raise ValueError("width must be a power of two")


def not_a_module(activation, latent_dim, shape, **options):
    return lambda x: x


class _EncodeOnly(nn.Module):
    def __init__(self, latent_dim, shape):
        super().__init__()
        self.layer = nn.Linear(math.prod(shape), 2 * latent_dim)

    def encode(self, x):
        return self.layer(x.flatten(1)).chunk(2, -1)


def no_decode(activation, latent_dim, shape, **options):
    return _EncodeOnly(latent_dim, shape)


class _WrongShape(MLPVAE):
    def decode(self, z):
        return self.decoder(z)[:, :-1]


def wrong_shape(activation, latent_dim, shape, **options):
    return _WrongShape(activation, latent_dim, shape)


class _NaN(MLPVAE):
    def encode(self, x):
        mu, logvar = super().encode(x)
        return mu, torch.log(logvar - 1e6)


def nan_forward(activation, latent_dim, shape, **options):
    return _NaN(activation, latent_dim, shape)


class _BatchNorm(MLPVAE):
    def __init__(self, activation, latent_dim, shape):
        super().__init__(activation, latent_dim, shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 32), nn.BatchNorm1d(32), activation())


def batchnorm(activation, latent_dim, shape, **options):
    return _BatchNorm(activation, latent_dim, shape)


class _Counting(MLPVAE):
    """Writes a buffer of its own in every forward."""

    def __init__(self, activation, latent_dim, shape):
        super().__init__(activation, latent_dim, shape)
        self.register_buffer("calls", torch.zeros(()))

    def encode(self, x):
        self.calls += 1
        return super().encode(x)


def counting(activation, latent_dim, shape, **options):
    return _Counting(activation, latent_dim, shape)


class _Noisy(MLPVAE):
    def encode(self, x):
        mu, logvar = super().encode(x)
        return mu + torch.randn_like(mu), logvar


def noisy(activation, latent_dim, shape, **options):
    return _Noisy(activation, latent_dim, shape)


class _SharedGAN(GAN):
    def __init__(self, activation, latent_dim, shape):
        super().__init__(activation, latent_dim, shape)
        self.tied = nn.Linear(math.prod(shape), math.prod(shape))

    def generate(self, z):
        return self.tied(super().generate(z).flatten(1)).view(-1, *self.shape)

    def discriminate(self, x):
        return super().discriminate(self.tied(x.flatten(1)).view(-1, *self.shape))


def shared_gan(activation, latent_dim, shape, **options):
    return _SharedGAN(activation, latent_dim, shape)


class _Dropout(MLPVAE):
    def __init__(self, activation, latent_dim, shape):
        super().__init__(activation, latent_dim, shape)
        self.encoder.append(nn.Dropout(0.1))


def dropout(activation, latent_dim, shape, **options):
    return _Dropout(activation, latent_dim, shape)
