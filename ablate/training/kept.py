"""Trained models, kept: each finished member's weights, and what a researcher does with them.

Owns: the files under results/<name>/models/ (one per trial, `t<number>.pt`: each finished
member's own, unpadded weights with its configuration and the data's shape; plain tensors,
numbers and strings that `torch.load(weights_only=True)` reads without running code; a file
cut short or not ablate's is refused with one line naming it), taking a member's weights out
of a trained fleet, rebuilding one member as a one-member model,
`Standalone` (the module `ablate export` writes as TorchScript: `encode`, `decode`, a GAN's
`generate`, on tensors shaped like the dataset's images; `OwnStandalone` for a user's module,
whose member is kept as that module's own state_dict) and prior samples (`ablate sample`).
Does not own: the layers and models (layers.py, models.py) or training (loop.py).

A member's rows in a fleet are padded to the cohort's widest member; padding is exactly zero
(docs/architecture.md, "The fleet"), so its own weights are the leading block of each row
(block by block for a VAE's μ and log σ² heads).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ablate.errors import UserError
from ablate.files import atomic_open
from ablate.nets.families import FAMILY
from ablate.nets.layers import Linear
from ablate.nets.models import Autoencoder, build_model
from ablate.nets.plugin import PluginModel
from ablate.streams import FIXED_SEED
from ablate.study.schema import RunConfig
from ablate.training.fleet import Fleet, activation_groups

FORMAT = 1
MODELS = "models"
"""The folder of a results folder that holds the trained members."""


def _alone(config: RunConfig, shape: tuple[int, ...]) -> Autoencoder:
    """A one-member model of `config` on the CPU (its init values are overwritten)."""
    groups = (activation_groups([config.activation]), activation_groups([config.decoder]))
    return build_model([(config, torch.Generator().manual_seed(FIXED_SEED))], shape, groups, torch.device("cpu"))


def member_weights(fleet: Fleet, i: int) -> dict[str, Tensor]:
    """Member i's own (unpadded) value of every stacked parameter, on the CPU; a user's
    module's member as that module's own state_dict."""
    if isinstance(fleet.model, PluginModel):
        return fleet.model.member_state(i)
    alone = _alone(fleet.members[i].config, fleet.shape)
    out = {}
    for name, slot in alone.slots().items():
        stacked = fleet.slots[name]
        row = stacked.owners.index(i)
        padded = stacked.tensor.detach()[row].cpu()
        own = tuple(slot.tensor.shape[1:])
        layer = alone.layers.get(name.rpartition(".")[0])
        blocks = layer.blocks if isinstance(layer, Linear) else 1
        if blocks > 1:  # heads side by side: the leading columns of each block
            padded = padded.unflatten(-1, (blocks, -1))[..., :own[-1] // blocks].flatten(-2)
        out[name] = padded[tuple(slice(0, s) for s in own)].clone()
    return out


def save_trial(folder: Path, trial: int, shape: tuple[int, ...],
               members: list[tuple[int, RunConfig, dict[str, Tensor]]]) -> None:
    """One trial's finished members (seed, configuration, weights) as `t<trial>.pt`."""
    if not members:
        return
    folder.mkdir(parents=True, exist_ok=True)
    content = {"format": FORMAT, "trial": trial, "shape": list(shape),
               "members": {int(seed): {"config": asdict(config), "weights": weights}
                           for seed, config, weights in members}}
    with atomic_open(folder / f"t{trial}.pt", "wb") as f:
        torch.save(content, f)


def load_member(results: Path, trial: int, seed: int) -> tuple[Autoencoder, RunConfig, tuple[int, ...]]:
    """Member (trial, seed) of a results folder as a one-member model on the CPU, with its
    configuration and the data's shape; a UserError names what is missing."""
    path = Path(results) / MODELS / f"t{trial}.pt"
    if not path.is_file():
        kept = sorted(int(p.stem[1:]) for p in (Path(results) / MODELS).glob("t*.pt")
                      if p.stem[1:].isdigit())
        raise UserError(f"{path}: no trained model of trial {trial} (a trial that failed, was "
                        "pruned or is still running keeps none; kept: "
                        f"{', '.join(map(str, kept)) or 'none'}); see runs.csv for trials and seeds.")
    content = _read(path)
    members = content["members"]
    if seed not in members:
        raise UserError(f"{path}: trial {trial} keeps no member of seed {seed} (it keeps seeds "
                        f"{', '.join(map(str, sorted(members)))}; a failed or pruned member keeps none).")
    try:
        known = {f.name for f in fields(RunConfig)}
        raw = members[seed]["config"]
        config = RunConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known})
        shape = tuple(content["shape"])
        if config.module:  # a user's module: its state_dict (the module is imported to load it)
            model = PluginModel([(config, torch.Generator().manual_seed(FIXED_SEED))], shape, torch.device("cpu"))
            model.load_member_state(0, members[seed]["weights"])
            return model, config, shape
        model = _alone(config, shape)
        with torch.no_grad():
            for name, slot in model.slots().items():
                slot.tensor.copy_(members[seed]["weights"][name][None])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, exc) from None
    return model, config, shape


def _read(path: Path) -> dict:
    """A models/t<trial>.pt file's contents, or a UserError naming it when it is cut short,
    damaged or not one of ablate's."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch finds wrong, the file is the user's to fix
        raise _unreadable(path, exc) from None
    if not (isinstance(content, dict) and isinstance(content.get("members"), dict)
            and isinstance(content.get("shape"), (list, tuple))):
        raise _unreadable(path, ValueError("not a trained trial's members"))
    return content


def _unreadable(path: Path, exc: Exception) -> UserError:
    text = str(exc).strip()
    reason = text.split(". ")[0].splitlines()[0][:160] if text else type(exc).__name__
    return UserError(f"{path}: cannot be read as a trained model ({reason}); it is damaged (a copy "
                     "cut short?) or not ablate's: restore it from the results folder it came from.")


class Standalone(torch.nn.Module):
    """One member as a plain module: `encode(x)` → (μ, log σ²) for a VAE, the code z for the
    other autoencoders; `decode(z)` → Bernoulli logits or Gaussian means; a GAN's
    `generate(z)` → images in [0, 1] and `discriminate(x)` → logits. x and outputs are shaped
    like the dataset's examples, (B, C, H, W) or (B, D); z is (B, latent_dim)."""

    def __init__(self, model: Autoencoder, config: RunConfig, shape: tuple[int, ...]):
        super().__init__()
        self.model, self.family, self.shape = model, FAMILY[config.family], shape
        for name, slot in model.slots().items():  # the traced module owns every weight, by network
            slot.tensor = slot.tensor.detach()
            network = self.family.networks[model.network(name)]
            self.register_buffer(f"{network}_{name.replace('.', '_')}", slot.tensor)

    def _flat(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)

    def _shaped(self, out: Tensor) -> Tensor:
        return out[0].reshape((out.shape[1], *self.shape))

    def encode(self, x: Tensor):
        mu, logvar = self.model.encode(self._flat(x))
        return self.family.exported_code(mu[0], None if logvar is None else logvar[0])

    def decode(self, z: Tensor) -> Tensor:
        return self._shaped(self.model.decode(z[None]))

    def generate(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.decode(z))

    def discriminate(self, x: Tensor) -> Tensor:
        return self.model.discriminate(self._flat(x)[None])[0]


class OwnStandalone(torch.nn.Module):
    """One member of a user's module (model.module) with Standalone's methods: the module
    itself, its weights loaded, inside (`inner`, as the factory builds it)."""

    def __init__(self, model: PluginModel, config: RunConfig, shape: tuple[int, ...]):
        super().__init__()
        self.family, self.shape = FAMILY[config.family], shape
        self.inner = model.member_module(0)
        self.first, self.second = self.family.methods

    def encode(self, x: Tensor):
        out = getattr(self.inner, self.first)(x)
        return self.family.exported_code(*out) if isinstance(out, (tuple, list)) else self.family.exported_code(out, None)

    def decode(self, z: Tensor) -> Tensor:
        return getattr(self.inner, self.second)(z).reshape((z.shape[0], *self.shape))

    def generate(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.decode(z))

    def discriminate(self, x: Tensor) -> Tensor:
        return getattr(self.inner, self.first)(x).reshape(x.shape[0])


def export(results: Path, trial: int, seed: int, out: Path) -> Path:
    """Member (trial, seed) as a TorchScript file that `torch.jit.load` reads without ablate;
    its configuration rides along as the extra file `ablate.json`. A user's module is traced
    as it is; one that tracing cannot follow is a UserError."""
    model, config, shape = load_member(results, trial, seed)
    module = (OwnStandalone if config.module else Standalone)(model, config, shape).eval()
    x = torch.rand(3, *shape)
    z = torch.randn(3, config.latent_dim)
    methods = FAMILY[config.family].export_methods(x, z)
    meta = {"trial": trial, "seed": seed, "shape": list(shape), "config": asdict(config),
            "methods": sorted(methods)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # TorchScript is deprecated from PyTorch 2.13 on in favour of torch.export, but it is what
    # plain PyTorch loads as a module with several methods (torch.jit.load): its warnings are
    # the library's news, not the user's problem.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            traced = torch.jit.trace_module(module, methods, check_trace=False)
        except Exception as exc:  # a user's module that tracing cannot follow
            if not config.module:
                raise
            raise UserError(f"model.module '{config.module}' cannot be traced by torch.jit.trace "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                            f"load the member's weights into your module instead: "
                            f"{Path(results) / MODELS}/t{trial}.pt holds members[{seed}]['weights'], its state_dict.") from None
        with atomic_open(out, "wb") as f:
            torch.jit.save(traced, f, _extra_files={"ablate.json": json.dumps(meta, default=list)})
    return out


@torch.no_grad()
def prior_samples(results: Path, trial: int, seed: int, n: int, noise_seed: int = 0) -> tuple[np.ndarray, tuple]:
    """n decoded draws z ~ N(0, I) of member (trial, seed), as mean images in [0, 1] (a VAE's
    or GAN's; an autoencoder has no prior and is refused): uint8 (n, D) and the data's shape."""
    model, config, shape = load_member(results, trial, seed)
    family = FAMILY[config.family]
    if not family.prior:
        raise UserError(f"trial {trial} is a {family.title}: only a VAE or a GAN has a prior to "
                        "sample; use `ablate export` and decode codes of your own.")
    z = torch.randn(n, config.latent_dim, generator=torch.Generator().manual_seed(noise_seed))
    means = family.mean_image(model.decode(z[None])[0], config.likelihood)
    return (means * 255).round().to(torch.uint8).numpy(), shape
