"""Models composed of stacked layers: the MLP and the convolutional autoencoder (VAE or AE).

Owns: each architecture's layers and their order (`build_model`), the init draw order of one
member, encode / decode of N members at once, the observation likelihood, which hidden units
are real (not padding), and the sizes a memory estimate needs (`param_count`,
`activation_floats`). Does not own: the stacked layers (layers.py), members, training or
Adam (fleet.py).

- `mlp`: x → [Linear, activation] per `hidden` width → μ, log σ² heads; the decoder mirrors it
  (z → [Linear, activation] per reversed width → Linear to the pixels).
- `conv`: x (C, H, W) → [Conv2d(k=4, s=2, p=1), activation] per `channels` → flatten →
  [Linear, activation] per `hidden` → heads. Decoder: [Linear, activation] per reversed
  `hidden` → Linear to channels[-1]·h·w, activation → [ConvTranspose2d(k=4, s=2, p=1),
  activation] back through the channels → a last ConvTranspose2d to C channels (output
  padding where a size was odd), the Bernoulli logits or Gaussian means.
The hidden layers take the member's init scheme (its activation's with `init: auto`); the
heads and the output layer PyTorch's default.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ablate.nets.activations import DECODER_LAYERS, pieces_of, spec_of
from ablate.nets.families import FAMILY
from ablate.nets.layers import KERNEL, Conv, Groups, Linear, Maps, Nonlinear, Slot, Stacked, stacked
from ablate.nets.nonlinear import get_activation
from ablate.study.schema import RunConfig
from ablate.training.estimators import LOG_2PI


def conv_sizes(shape: Sequence[int], channels: Sequence[int]) -> list[tuple[int, int]]:
    """(H, W) before the first and after every convolution: each halves, rounding down.
    Raises ValueError when a size reaches zero (too many channels for the image)."""
    sizes = [(int(shape[-2]), int(shape[-1]))]
    for _ in channels:
        h, w = sizes[-1]
        if h < 2 or w < 2:
            raise ValueError(f"a {shape[-2]}×{shape[-1]} image halves to {h}×{w} after "
                             f"{len(sizes) - 1} convolutions; {len(channels)} channels entries "
                             "need it to halve that often")
        sizes.append((h // 2, w // 2))
    return sizes


def flat_shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    """The shape of one example: an int is flat data of that many values."""
    return (shape,) if isinstance(shape, int) else tuple(shape)


def layer_sizes(config: RunConfig, shape: Sequence[int] | int) -> list[tuple[int, int, int, str | None]]:
    """One built-in member's layers in forward order, encoder then decoder: (inputs summed per
    output value, output values per position, positions, the activation that follows or None).
    A convolution's output value sums c_in·k² inputs (a transposed one's, in the sense of
    FLOPs, is c_in·k² per input position: its positions are its input's). Before a maxout
    the outputs are its pieces."""
    shape = flat_shape(shape)
    enc, dec, k2 = config.activation, config.decoder, KERNEL * KERNEL
    ke, kd = pieces_of(enc), pieces_of(dec)
    h, latent = list(config.hidden), config.latent_dim
    out: list[tuple[int, int, int, str | None]] = []
    if config.arch == "conv":
        sizes, ch = conv_sizes(shape, config.channels), [shape[0], *config.channels]
        out += [(ch[i] * k2, ke * ch[i + 1], math.prod(sizes[i + 1]), enc) for i in range(len(ch) - 1)]
        flat = ch[-1] * math.prod(sizes[-1])
    else:
        flat = math.prod(shape)
    widths = [flat, *h]
    out += [(a, ke * b, 1, enc) for a, b in zip(widths[:-1], widths[1:])]
    out.append((widths[-1], FAMILY[config.family].head_width(latent), 1, None))
    back = [latent, *reversed(h)]
    out += [(a, kd * b, 1, dec) for a, b in zip(back[:-1], back[1:])]
    if config.arch == "conv":
        out.append((back[-1], kd * flat, 1, dec))  # proj, then the transposed convolutions
        for i in range(len(ch) - 2, -1, -1):
            last = i == 0
            out.append((ch[i + 1] * k2, ch[i] * (1 if last else kd), math.prod(sizes[i + 1]),
                        None if last else dec))
    else:
        out.append((back[-1], flat, 1, None))
    return out


def _activation_sizes(name: str, outputs: int) -> tuple[int, int]:
    """(learnable values, FLOPs per example) of an activation after a layer of `outputs`
    values per position: its units are outputs / pieces (channels of a conv layer). Only
    meta_acon's switch network has matmuls (2·R·units multiply-adds, once per example);
    elementwise work is not counted."""
    spec = spec_of(name)
    if spec is None:  # a plugin: its parameters, one copy per layer
        return sum(v.numel() for v in get_activation(name).params.values()), 0
    units = outputs // spec.pieces
    return spec.learnable_count(units), 2 * 2 * len(spec.unit_params.get("w1", ())) * units


def param_count(config: RunConfig, shape: Sequence[int] | int) -> int:
    """Trainable values of one member: its layers' weights and biases, its activations' own
    parameters, a Gaussian decoder's log σ (the cost comparison, memory estimates)."""
    shape = flat_shape(shape)
    if config.module:  # a user's module: counted on one built copy
        from ablate.nets.plugin import sizes
        return sizes(config, shape)[0]
    total = int(config.likelihood == "gaussian")
    for fan_in, outputs, positions, act in layer_sizes(config, shape):
        total += (fan_in + 1) * outputs + (_activation_sizes(act, outputs)[0] if act else 0)
    return total


def flops(config: RunConfig, shape: Sequence[int] | int) -> int:
    """Forward FLOPs of one member per example — encoding an image and decoding a code, two
    per multiply-add of its layers (and of meta_acon's switch network), as
    torch.utils.flop_counter counts them; elementwise work (activations, biases) not counted."""
    shape = flat_shape(shape)
    if config.module:
        from ablate.nets.plugin import sizes
        return sizes(config, shape)[2]
    total = 0
    for fan_in, outputs, positions, act in layer_sizes(config, shape):
        total += 2 * fan_in * outputs * positions + (_activation_sizes(act, outputs)[1] if act else 0)
    return total


def activation_floats(config: RunConfig, shape: Sequence[int] | int) -> int:
    """Hidden values of one member for one example, encoder and decoder together (before a
    maxout its pieces too)."""
    if config.module:
        from ablate.nets.plugin import sizes
        return sizes(config, flat_shape(shape))[1]
    side = sum(config.hidden)
    if config.arch == "conv":
        sizes = conv_sizes(flat_shape(shape), config.channels)
        side += sum(c * h * w for c, (h, w) in zip(config.channels, sizes[1:]))
    return sum(side * (k + 1 if k > 1 else 1) for k in map(pieces_of, (config.activation, config.decoder)))


class _BernoulliNLL(torch.autograd.Function):
    """−log Bernoulli(x | sigmoid(logits)) summed over pixels: softplus(l) − x·l, (..., D) → (...).

    The same value as binary_cross_entropy_with_logits(...).sum(-1), in three passes over the
    (N, B, D) logits instead of about nine (its forward and backward make several temporaries);
    the gradient is sigmoid(l) − x."""

    @staticmethod
    def forward(ctx, logits: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(logits, x)
        return torch.nn.functional.softplus(logits).sum(-1) - torch.linalg.vecdot(logits, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        logits, x = ctx.saved_tensors
        return torch.sigmoid(logits).sub_(x).mul_(grad.unsqueeze(-1)), None


def log_likelihood(likelihood: str, x: Tensor, out: Tensor, log_sigma: Slot | None) -> Tensor:
    """log p(x | z) summed over pixels: x (N, B, D) or (B, D), out (N, B, D) → (N, B), or out
    (N, K, B, D) with x (B, D) broadcast → (N, K, B); a Gaussian's shared log σ is each
    member's (N, 1, 1) slot."""
    if likelihood == "bernoulli":
        return -_BernoulliNLL.apply(out, x)
    log_sigma = log_sigma.tensor.view(-1, *(1,) * (out.dim() - 1))
    sq = ((x - out) * torch.exp(-log_sigma)) ** 2
    return -0.5 * (sq + 2.0 * log_sigma + LOG_2PI).sum(-1)


class Autoencoder:
    """N members' encoders and decoders over stacked layers (`layers`, in init draw order);
    `acts` are the activations in forward order, encoder then decoder."""

    def __init__(self, configs: list[RunConfig], shape: tuple[int, ...], groups: tuple[Groups, Groups]):
        c0 = configs[0]
        self.family, self.likelihood, self.shape = FAMILY[c0.family], c0.likelihood, shape
        self.data_dim = math.prod(shape)
        self.latent = max(c.latent_dim for c in configs)
        self.depth = len(c0.hidden)
        self._groups = groups  # (encoder, decoder) as built; each Nonlinear keeps its own after a select
        self.layers: dict[str, Stacked] = {}
        self.acts: list[Nonlinear] = []
        self.extra: dict[str, Slot] = {}
        self.first_layers = {"enc.0", "dec.0"}  # the encoder's and the decoder's input layers
        self.real_latent = torch.tensor([c.latent_dim for c in configs])
        self.drop = torch.tensor([c.dropout for c in configs])
        self.rng: list[torch.Generator] | None = None
        """Each member's mask generator while training (dropout on); None when evaluating."""

    # ---------------------------------------------------------------------- construction
    def _head(self, n: int, fan_in: int) -> Linear:
        """The first network's head, as the family has it: μ and log σ² (vae) side by side,
        the code (autoencoders), or a GAN discriminator's one logit."""
        width, blocks = self.family.head(self.latent)
        return Linear(n, fan_in, width, blocks)

    def network(self, slot: str) -> int:
        """Which of the family's two networks a slot (`layer.parameter`) belongs to: 0 reads
        images (an encoder, a GAN's discriminator), 1 writes them (a decoder, a generator)."""
        layer = slot.split(".")[0]
        if layer == "act":
            return int(int(slot.split(".")[1]) >= len(self.acts) // 2)
        return int(layer in (*DECODER_LAYERS, "out", "log_sigma"))

    def pieces(self, decoder: bool) -> int:
        """Values per unit the layers before one side's activations give (maxout's K; 1 for
        every other activation): a cohort's members share it (RunConfig.cohort_key)."""
        return self._groups[decoder][0][0].pieces

    def _nonlinear(self, width: int, real: list[int] | None = None, decoder: bool = False) -> None:
        act = Nonlinear(self._groups[decoder], width, real)
        act.after = list(self.layers)[-1]
        self.layers[f"act.{len(self.acts)}"] = act
        self.acts.append(act)

    def _fc_stack(self, configs: list[RunConfig], prefix: str, fan_in: int, reverse: bool) -> None:
        """Linear + activation per hidden layer (padded to the widest member's widths)."""
        order = range(self.depth - 1, -1, -1) if reverse else range(self.depth)
        for i, k in enumerate(order):
            width = max(c.hidden[k] for c in configs)
            self.layers[f"{prefix}.{i}"] = Linear(len(configs), fan_in, self.pieces(reverse) * width)
            self._nonlinear(width, [c.hidden[k] for c in configs], decoder=reverse)
            fan_in = width

    def _fc_draws(self, first: int) -> list[tuple]:
        """Init draws of the encoder's fully connected layers, the heads and the decoder's."""
        d = self.depth
        draws = [(f"enc.{i}", _width(i - 1, first), _width(i, 0), True) for i in range(d)]
        draws.append(("head", _width(d - 1, first), lambda c: self.family.head(c.latent_dim)[0], False))
        return draws + [(f"dec.{i}", _width(d - i, 0, latent=i == 0), _width(d - 1 - i, 0), True)
                        for i in range(d)]

    def _init(self, members: list[tuple[RunConfig, torch.Generator]], draws: list[tuple]) -> None:
        """Each member's layers from its own generator, in `draws` order: (layer, fan_in(config),
        fan_out(config), whether an activation follows — then the member's init scheme)."""
        for i, (config, gen) in enumerate(members):
            sides = [get_activation(a) for a in (config.activation, config.decoder)]
            for name, fan_in, fan_out, hidden in draws:
                act = sides[name.split(".")[0] in DECODER_LAYERS]
                scheme = act.init if config.init == "auto" else config.init
                s, gain = (scheme, act.gain) if hidden else ("default", 1.0)
                layer, first = self.layers[name], name in self.first_layers
                if isinstance(layer, Conv):
                    layer.init_member(i, gen, s, gain, first)
                else:  # before a maxout, each unit's pieces side by side
                    out = fan_out(config) * (act.pieces if hidden else 1)
                    layer.init_member(i, gen, s, gain, fan_in(config), out, first)

    def place(self, device: torch.device) -> None:
        for layer in self.layers.values():
            layer.place(device)
        n = len(self.real_latent)
        if self.likelihood == "gaussian":  # learned shared observation noise (σ-VAE), log σ = 0
            self.extra["log_sigma"] = Slot(torch.zeros(n, 1, 1, device=device), list(range(n)))
        self.real_latent = self.real_latent.to(device)
        self.drop = self.drop.to(device)
        self._derive_latent()

    def _derive_latent(self) -> None:
        cols = torch.arange(self.latent, device=self.real_latent.device)
        self.latent_mask = (cols < self.real_latent[:, None]).float().unsqueeze(1)  # (N, 1, L)
        self._latent_full = bool((self.real_latent == self.latent).all())

    def select(self, new_position: dict[int, int]) -> None:
        for layer in self.layers.values():
            layer.select(new_position)
        self.extra = {k: s2 for k, s in self.extra.items() if (s2 := s.select(new_position))}
        keep = torch.tensor(sorted(new_position, key=new_position.get), device=self.drop.device)
        self.real_latent, self.drop = self.real_latent[keep], self.drop[keep]
        self._derive_latent()

    def tune(self, batch: int) -> dict[str, dict[str, float]]:
        """Choose how each layer runs for a training batch (ConvNet: each convolution's
        strategy); {layer: {strategy: seconds}}. An MLP has nothing to choose."""
        return {}

    def strategies(self) -> dict[str, str]:
        """Each convolution's strategy (layers.CONV_STRATEGIES), as a checkpoint keeps them."""
        return {k: layer.strategy for k, layer in self.layers.items() if isinstance(layer, Conv)}

    def use(self, strategies: dict[str, str]) -> None:
        """Run the convolutions as `strategies` say (a resumed cohort runs as it was saved)."""
        for k, strategy in strategies.items():
            if isinstance(self.layers.get(k), Conv):
                self.layers[k].strategy = strategy

    def slots(self) -> dict[str, Slot]:
        """Every stacked parameter, by `layer.parameter` name."""
        out = {f"{ln}.{sn}": s for ln, layer in self.layers.items() for sn, s in layer.slots.items()}
        return {**out, **self.extra}

    # ---------------------------------------------------------------------- forward
    def _act(self, k: int, pre: Maps, hidden: list | None) -> Maps:
        """Activation k, then dropout while training; its output joins `hidden` as (N,
        observations, units): a unit is a hidden unit, or a channel of feature maps (observed
        at every position)."""
        dropout = self.rng is not None and bool((self.drop > 0).any())
        h = self.acts[k](stacked(pre) if dropout or hidden is not None else pre)
        if dropout:
            h = h * self._dropout_masks(h)
        if hidden is not None:
            hidden.append(h if h.dim() == 3 else h.movedim(2, -1).flatten(1, -2))
        return h

    def _fc(self, prefix: str, first_act: int, h: Tensor, hidden: list | None) -> Tensor:
        for i in range(self.depth):
            h = self._act(first_act + i, self.layers[f"{prefix}.{i}"](h), hidden)
        return h

    def _dropout_masks(self, h: Tensor) -> Tensor:
        """Inverted-dropout masks (N, …) like h: member i keeps each value with 1 − p_i, drawn
        from its own generator (a member without dropout draws nothing)."""
        masks = torch.ones_like(h)
        for i, (p, gen) in enumerate(zip(self.drop.tolist(), self.rng)):
            if p > 0:
                keep = torch.rand(h.shape[1:], generator=gen, device=h.device) >= p
                masks[i] = keep / (1.0 - p)
        return masks

    def _heads(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        mu, logvar = self.family.code(self.layers["head"](h), self.latent)
        if not self._latent_full:
            mu = mu * self.latent_mask
            logvar = None if logvar is None else logvar * self.latent_mask
        return mu, logvar

    def encode(self, x: Tensor, hidden: list | None = None) -> tuple[Tensor, Tensor | None]:
        """x (N, B, D) or shared (B, D) → μ, log σ² (N, B, L), zero on padded latent dims."""
        return self._heads(self._features(x, hidden))

    def discriminate(self, x: Tensor) -> Tensor:
        """A GAN's discriminator logits (N, B) of images x (N, B, D): the encoder's layers and
        a one-unit head."""
        return self.layers["head"](self._features(x, None))[..., 0]

    def log_likelihood(self, x: Tensor, out: Tensor) -> Tensor:
        """log p(x | z) summed over pixels: x (N, B, D) or (B, D), out (N, B, D) → (N, B)."""
        return log_likelihood(self.likelihood, x, out, self.extra.get("log_sigma"))

    def real_units(self) -> Tensor:
        """(N, U) bool: which units of `hidden` (encode then decode) are real, not padding."""
        n, dev = len(self.real_latent), self.real_latent.device
        return torch.cat([torch.ones(n, a.width, dtype=torch.bool, device=dev) if a.real is None
                          else torch.arange(a.width, device=dev)[None, :] < a.real[:, None]
                          for a in self.acts], -1)


class MLP(Autoencoder):
    """The fully connected VAE / AE (the layers and draw order ablate has always had)."""

    def __init__(self, members: list[tuple[RunConfig, torch.Generator]], shape: tuple[int, ...],
                 groups: tuple[Groups, Groups]):
        configs = [c for c, _ in members]
        super().__init__(configs, shape, groups)
        n, D = len(configs), self.data_dim
        self._fc_stack(configs, "enc", D, reverse=False)
        self.layers["head"] = self._head(n, self.acts[-1].width)
        self._fc_stack(configs, "dec", self.latent, reverse=True)
        self.layers["out"] = Linear(n, self.acts[-1].width, D)
        self._init(members, self._fc_draws(D) + [("out", _width(0, 0), lambda c: D, False)])

    def _features(self, x: Tensor, hidden: list | None) -> Tensor:
        """The encoder's last hidden layer (N, B, W) of x (N, B, D) or shared (B, D)."""
        return self._fc("enc", 0, x, hidden)

    def decode(self, z: Tensor, hidden: list | None = None) -> Tensor:
        """z (N, B, L) → decoder output (N, B, D): Bernoulli logits or Gaussian means."""
        return self.layers["out"](self._fc("dec", self.depth, z, hidden))


class ConvNet(Autoencoder):
    """The convolutional VAE / AE: conv stacks around the MLP's fully connected middle.
    Activations: one per conv, the encoder's fc layers, the decoder's, the projection, one
    between consecutive transposed convs."""

    def __init__(self, members: list[tuple[RunConfig, torch.Generator]], shape: tuple[int, ...],
                 groups: tuple[Groups, Groups]):
        configs = [c for c, _ in members]
        super().__init__(configs, shape, groups)
        n, channels = len(configs), list(configs[0].channels)
        sizes = conv_sizes(shape, channels)
        chans = [shape[0], *channels]
        self.n_conv = len(channels)
        self.first_layers = {"conv.0", "dec.0" if self.depth else "proj"}
        self.maps = (channels[-1], *sizes[-1])  # the last feature maps (C, h, w)
        self.conv_inputs = {f"conv.{i}": (chans[i], *sizes[i]) for i in range(len(channels))}
        self.conv_inputs.update({f"deconv.{j}": (chans[len(channels) - j], *sizes[len(channels) - j])
                                 for j in range(len(channels))})
        """Each convolution's input (C, H, W): what `tune` times it on."""
        flat = math.prod(self.maps)
        enc, dec = self.pieces(False), self.pieces(True)
        for i in range(self.n_conv):
            self.layers[f"conv.{i}"] = Conv(n, chans[i], enc * chans[i + 1])
            self._nonlinear(chans[i + 1])
        self._fc_stack(configs, "enc", flat, reverse=False)
        last = self.acts[-1].width if self.depth else flat
        self.layers["head"] = self._head(n, last)
        self._fc_stack(configs, "dec", self.latent, reverse=True)
        self.layers["proj"] = Linear(n, self.acts[-1].width if self.depth else self.latent, dec * flat)
        self._nonlinear(channels[-1], decoder=True)
        for j in range(self.n_conv):  # back through the channels, to the image's
            i = self.n_conv - 1 - j
            (h, w), (h2, w2) = sizes[i], sizes[i + 1]
            out = chans[i] * (dec if i > 0 else 1)
            self.layers[f"deconv.{j}"] = Conv(n, chans[i + 1], out, True, (h - 2 * h2, w - 2 * w2))
            if i > 0:
                self._nonlinear(chans[i], decoder=True)
        draws = [(f"conv.{i}", None, None, True) for i in range(self.n_conv)]
        draws += self._fc_draws(flat)
        draws.append(("proj", _width(0, 0, latent=self.depth == 0), lambda c: flat, True))
        draws += [(f"deconv.{j}", None, None, j < self.n_conv - 1) for j in range(self.n_conv)]
        self._init(members, draws)

    def tune(self, batch: int) -> dict[str, dict[str, float]]:
        """Each convolution's faster strategy on a training batch (layers.Conv.tune): one
        grouped convolution or one per member; {layer: {strategy: seconds}}."""
        n = len(self.real_latent)
        return {name: self.layers[name].tune((n, batch, *shape)) for name, shape in self.conv_inputs.items()}

    def _features(self, x: Tensor, hidden: list | None) -> Tensor:
        """The encoder's last hidden layer (N, B, W) of x (N, B, D) or shared (B, D)."""
        h = x.unflatten(-1, self.shape)
        for j in range(self.n_conv):
            h = self._act(j, self.layers[f"conv.{j}"](h), hidden)
        return self._fc("enc", self.n_conv, stacked(h).flatten(-3), hidden)

    def decode(self, z: Tensor, hidden: list | None = None) -> Tensor:
        """z (N, B, L) → decoder output (N, B, D): Bernoulli logits or Gaussian means."""
        k = self.n_conv + self.depth
        h = self._fc("dec", k, z, hidden)
        maps = (self.pieces(True) * self.maps[0], *self.maps[1:])
        h = self._act(k + self.depth, self.layers["proj"](h).unflatten(-1, maps), hidden)
        for j in range(self.n_conv):
            h = self.layers[f"deconv.{j}"](h)
            if j < self.n_conv - 1:
                h = self._act(k + self.depth + 1 + j, h, hidden)
        return stacked(h).flatten(-3)


def _width(k: int, first: int, latent: bool = False):
    """A member's width before a layer: hidden[k], or `first` (k < 0), or its latent size."""
    if latent:
        return _latent
    return (lambda c: first) if k < 0 else (lambda c: c.hidden[k])


def _latent(c: RunConfig) -> int:
    return c.latent_dim


def build_model(members: list[tuple[RunConfig, torch.Generator]], shape: tuple[int, ...],
                groups: tuple[Groups, Groups], device: torch.device) -> Autoencoder:
    """The model of one cohort (members sorted by activation, as `groups` say for the encoder
    and the decoder; each with its init generator), placed on `device`."""
    arch = members[0][0].arch
    if arch == "conv" and len(shape) != 3:
        raise ValueError(f"a conv model needs images (C, H, W), got data of shape {shape}")
    model = (ConvNet if arch == "conv" else MLP)(members, shape, groups)
    model.place(device)
    return model
