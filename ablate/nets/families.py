"""The model families, one class each: the VAE, the four deterministic autoencoders and the GAN.

Owns everything that differs between families: the two networks and their names, the head of
the first network (a VAE's μ and log σ², a code, a discriminator's logit), the loss and the two
named parts it reports per epoch, a family's penalty or input corruption, the settings only it
reads, the kinds of metric it has (the metric table's `families` follow from them), whether it
samples from a prior, how its output becomes an image, the metric a report ranks it by, and
what `ablate export` gives of it. The fleet, the epoch loop, evaluation, export, the study
parser and the report ask a family (`FAMILY[name]`); no other module compares a family's name.
Adding a family is one class here and its tests.

Importing this module does not import PyTorch (the study parser and the report read a family's
description); the training methods import it when they are first called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from ablate.training.fleet import Fleet

GAN_BETAS = (0.5, 0.999)
"""A GAN's two Adams (Radford et al. 2016)."""


class Family:
    """An autoencoder: an encoder to a code of latent_dim values, a decoder back to the image,
    trained on reconstruction (plus the family's penalty)."""

    name = "ae"
    title = "autoencoder"
    networks = ("encoder", "decoder")
    """The network that reads images, then the one that writes them."""
    methods = ("encode", "decode")
    """A user's module's methods (model.module), in the networks' order."""
    alternating = False
    """Whether its two networks are trained in turns, each by its own Adam (their weights must
    be apart)."""
    parts = ("recon", "kl")
    """The loss's two parts, recorded per epoch as train_<part>."""
    measures = frozenset({"reconstruction"})
    """Kinds of metric it has (metrics.Metric.kind): reconstruction (the ELBO's terms, latent
    codes and hidden units), posterior (KL, IWAE NLL, I(x; z)), samples (quality of images it
    generates)."""
    own: tuple[str, ...] = ()
    """Settings only this family reads (a grid does not multiply other families' members by them)."""
    prior = False
    """Whether it draws images from z ~ N(0, I) (and latent noise every training step)."""
    default_metric = "test_recon"
    rank = 1
    """A study of several families ranks by the default metric of the lowest rank among them."""

    # -------------------------------------------------------------------- description
    @property
    def posterior(self) -> bool:
        """Whether it has a posterior q(z | x) (a KL term, an IWAE bound, I(x; z))."""
        return "posterior" in self.measures

    def reads(self, key: str) -> bool:
        """Whether setting `key` changes this family's model."""
        return key not in OWN_SETTINGS or key in self.own

    def head(self, latent: int) -> tuple[int, int]:
        """The first network's head: (width, blocks side by side)."""
        return latent, 1

    def head_width(self, latent_dim: int) -> int:
        """Weights' columns of one member's head (parameter counts)."""
        width, blocks = self.head(latent_dim)
        return width * blocks

    def unit_data(self, likelihood: str) -> bool:
        """Whether the model needs its data in [0, 1]."""
        return likelihood == "bernoulli"

    def mean_image(self, out: Tensor, likelihood: str) -> Tensor:
        """The second network's output as a mean image in [0, 1]: sigmoid of Bernoulli logits,
        clamped Gaussian means."""
        return out.sigmoid() if likelihood == "bernoulli" else out.clamp(0, 1)

    def export_methods(self, x: Tensor, z: Tensor) -> dict[str, Tensor]:
        """The exported module's methods, each with an example input."""
        return {"encode": x, "decode": z}

    def exported_code(self, mu: Tensor, logvar: Tensor | None) -> Any:
        """What the exported `encode` returns for one member's μ and log σ²."""
        return mu

    # -------------------------------------------------------------------- training
    def code(self, stats: Tensor, latent: int) -> tuple[Tensor, Tensor | None]:
        """The head's output (N, B, width·blocks) → μ (the code) and log σ² (None)."""
        return stats, None

    def latent(self, mu: Tensor, logvar: Tensor | None, eps: Tensor) -> tuple[Tensor, Tensor]:
        """The decoder's input z and the KL term per image (N, B): the code, and zero."""
        import torch
        return mu, torch.zeros(mu.shape[:2], device=mu.device)

    def encoder_input(self, fleet: Fleet, x: Tensor) -> Tensor | None:
        """What the encoder sees while training (None: x itself)."""
        return None

    def penalty(self, fleet: Fleet, x_in: Tensor, z: Tensor) -> Tensor | float:
        """The family's penalty per image (N, B), added to the loss."""
        return 0.0

    def loss(self, fleet: Fleet, x: Tensor, eps: Tensor, beta: Tensor,
             x_in: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Per-member mean loss, recon and KL over the batch: x (N, B, D) the target, `x_in`
        what the encoder sees (default x), eps (N, B, L) → (N,). The loss adds β·KL and the
        family's penalty to the reconstruction."""
        x_in = x if x_in is None else x_in
        mu, logvar = fleet.encode(x_in)
        z, kl = self.latent(mu, logvar, eps)
        recon = -fleet.log_likelihood(x, fleet.decode(z))  # (N, B)
        loss = recon + beta[:, None] * kl + self.penalty(fleet, x_in, mu)
        return loss.mean(1), recon.mean(1), kl.mean(1)

    def train_step(self, fleet: Fleet, x: Tensor, eps: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One Adam step of every member on its batch x (N, B, D), dropout on; returns the loss
        and its two parts."""
        with fleet.training():
            loss, first, second = self.loss(fleet, x, eps, beta, self.encoder_input(fleet, x))
        fleet.descend(loss)
        return loss.detach(), first.detach(), second.detach()


class VAE(Family):
    """The variational autoencoder (Kingma & Welling 2014): a Gaussian posterior, the
    reparameterised sample, β·KL to the N(0, I) prior."""

    name, title = "vae", "VAE"
    measures = frozenset({"reconstruction", "posterior", "samples"})
    own = ("kl_weight", "kl_warmup_epochs")
    prior = True
    default_metric, rank = "test_nll", 0

    def head(self, latent: int) -> tuple[int, int]:
        return latent, 2

    def exported_code(self, mu: Tensor, logvar: Tensor | None) -> Any:
        return mu, logvar

    def code(self, stats: Tensor, latent: int) -> tuple[Tensor, Tensor | None]:
        return stats[..., :latent], stats[..., latent:]

    def latent(self, mu: Tensor, logvar: Tensor | None, eps: Tensor) -> tuple[Tensor, Tensor]:
        from ablate.training.estimators import kl_per_dim
        z = mu + eps * logvar.mul(0.5).exp()  # eps is zero on padded dims, so z is too
        return z, kl_per_dim(mu, logvar).sum(-1)  # (N, B); padded dims add 0


class DAE(Family):
    """The denoising autoencoder (Vincent et al. 2008): masking noise on the training input."""

    name, title = "dae", "denoising autoencoder"
    own = ("noise",)

    def encoder_input(self, fleet: Fleet, x: Tensor) -> Tensor | None:
        """Each pixel of member i's batch zeroed with probability noise_i, from the member's
        own mask generator."""
        import torch
        keep = torch.stack([torch.rand(x.shape[1:], generator=g, device=x.device) >= p
                            for p, g in zip(fleet.noise, fleet.mask_gens)])
        return x * keep


class SAE(Family):
    """The sparse autoencoder (Ng 2011): λ·Σ_d |z_d|."""

    name, title = "sae", "sparse autoencoder"
    own = ("sparsity",)

    def penalty(self, fleet: Fleet, x_in: Tensor, z: Tensor) -> Tensor | float:
        return fleet.sparsity[:, None] * z.abs().sum(-1)


class CAE(Family):
    """The contractive autoencoder (Rifai et al. 2011): λ·‖∂z/∂x‖²_F, computed exactly with one
    backward pass per latent dimension (the graph kept, so the penalty's own gradient trains
    the encoder)."""

    name, title = "cae", "contractive autoencoder"
    own = ("contraction",)

    def loss(self, fleet: Fleet, x: Tensor, eps: Tensor, beta: Tensor,
             x_in: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        x_in = (x if x_in is None else x_in).detach().requires_grad_(True)
        return super().loss(fleet, x, eps, beta, x_in)

    def penalty(self, fleet: Fleet, x_in: Tensor, z: Tensor) -> Tensor | float:
        import torch
        frobenius = torch.zeros(z.shape[:2], device=z.device)
        for d in range(z.shape[-1]):  # row d of every member's and image's Jacobian at once
            row, = torch.autograd.grad(z[..., d].sum(), x_in, create_graph=True)
            frobenius = frobenius + row.square().sum(-1)
        return fleet.contraction[:, None] * frobenius


class GAN(Family):
    """The GAN (Goodfellow et al. 2014): a generator from z ~ N(0, I) to images in [0, 1] and a
    discriminator of one logit, trained in turns with the non-saturating loss and Adam(β1 = 0.5,
    β2 = 0.999). Judged by its samples only: it has no encoder, so no reconstruction."""

    name, title = "gan", "GAN"
    networks = ("discriminator", "generator")
    methods = ("discriminate", "generate")
    alternating = True
    parts = ("g_loss", "d_loss")
    measures = frozenset({"samples"})
    prior = True
    default_metric, rank = "fid", 2

    def head(self, latent: int) -> tuple[int, int]:
        return 1, 1

    def unit_data(self, likelihood: str) -> bool:
        return True

    def mean_image(self, out: Tensor, likelihood: str) -> Tensor:
        return out.sigmoid()

    def export_methods(self, x: Tensor, z: Tensor) -> dict[str, Tensor]:
        return {"generate": z, "decode": z, "discriminate": x}

    def train_step(self, fleet: Fleet, x: Tensor, eps: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One discriminator step, then one generator step, each member on its own real batch
        x (N, B, D) and noise z = eps (N, B, L); returns the sum and (generator, discriminator)
        losses."""
        import torch.nn.functional as F
        first, second = self.networks
        with fleet.training():
            fake = fleet.decode(eps).sigmoid()  # images in [0, 1]
            d_loss = (F.softplus(-fleet.discriminate(x)) + F.softplus(fleet.discriminate(fake.detach()))).mean(1)
        fleet.descend(d_loss, fleet.networks[first], GAN_BETAS)
        with fleet.training():
            g_loss = F.softplus(-fleet.discriminate(fake)).mean(1)
        fleet.descend(g_loss, fleet.networks[second], GAN_BETAS)
        return (d_loss + g_loss).detach(), g_loss.detach(), d_loss.detach()


FAMILY: dict[str, Family] = {f.name: f for f in (VAE(), Family(), DAE(), SAE(), CAE(), GAN())}
"""Every family by its `model.family` name, in the order the schema lists them."""
FAMILIES: tuple[str, ...] = tuple(FAMILY)
OWN_SETTINGS = frozenset(k for f in FAMILY.values() for k in f.own)


def having(kind: str) -> frozenset[str]:
    """The families that have metrics of `kind` (reconstruction, posterior, samples; any: all)."""
    return frozenset(f.name for f in FAMILY.values() if kind == "any" or kind in f.measures)


def owners(key: str) -> frozenset[str]:
    """The families whose model setting `key` changes."""
    return frozenset(f.name for f in FAMILY.values() if f.reads(key))


def default_metric(families: set[str]) -> str:
    """What a report ranks a study of these families by when report.metric is not given: the
    VAE's NLL, a GAN's FID (its samples are all it has), the autoencoders' reconstruction."""
    return min((FAMILY[f] for f in families), key=lambda f: f.rank).default_metric
