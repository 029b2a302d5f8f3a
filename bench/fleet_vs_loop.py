"""Benchmark: the fleet against the textbook one-model-at-a-time loop, in one process.

(a) the PyTorch-examples loop: one model at a time, DataLoader(TensorDataset), batch 128, Adam;
(b) the fleet: every member in one batched model (ablate.training.fleet).
Both train the same members on the same data; we time training epochs only (no evaluation)
and print seconds per member-epoch, the ratio (a)/(b), the fleet's achieved GFLOP/s and its
fraction of this device's measured fp32 matmul peak; and (c) the fleet with train.dtype
bf16 (autocast), against (a) and (b).

Workloads:
  1. mnist: 784-400-20 VAEs, batch 128, 16 members (4 activations × 4 seeds), on synthetic
     784-pixel data; N_TRAIN images per epoch (MNIST has 60 000; --fraction sets the share).
  2. quick: the studies/quick.yaml grid on the bundled digits.
  3. conv: conv VAEs on 28×28 images (channels [32, 64], latent 16, batch 128), 16 members
     (4 activations × 4 seeds), --conv-images synthetic images per epoch. Also times one conv
     layer of the fleet two ways — grouped convolution (what the fleet uses) and
     torch.func.vmap over F.conv2d — forward and backward.
  4. own: a user's module (model.module, nets/plugin.py). (i) The built-in MLP VAE written as
     a module (examples/mlp_vae.py, 784-400-20, 16 members on workload 1's data): the module's
     fleet (torch.func) against the one-model loop of the same module and against the built-in
     fleet; and its four activations as four vmapped groups of one cohort against four cohorts
     of one group each. (ii) The residual GroupNorm VAE of examples/resnet_vae.py (width 16) on
     --conv-images 1×28×28 images: its fleet against its loop.
  5. e2e: 8 MNIST-shaped members (784-400-20, 8 epochs, 20 000 synthetic images): `ablate run`
     end to end (data, training, evaluation, report) against the loop's training alone, with
     where the run's time went.

Usage: python bench/fleet_vs_loop.py [--workload mnist|quick|conv|own|e2e|all] [--device cpu|cuda]
       [--members 64] [--fraction 0.1] [--conv-images 1024] [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ablate.data.datasets import load_dataset
from ablate.nets.layers import KERNEL, PADDING, STRIDE, Conv, synchronize
from ablate.nets.models import conv_sizes
from ablate.nets.plugin import build_member
from ablate.nets.nonlinear import get_activation
from ablate.study.loader import load_study
from ablate.study.schema import RunConfig
from ablate.training.fleet import Fleet, Member

CONV_SHAPE = (1, 28, 28)


class LoopVAE(nn.Module):
    """The PyTorch-examples VAE with a configurable activation and widths."""

    def __init__(self, dim: int, config: RunConfig):
        super().__init__()
        act = get_activation(config.activation)
        self.params = nn.ParameterDict()
        self.act = act
        h, L = list(config.hidden), config.latent_dim
        self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip([dim] + h[:-1], h))
        self.mu, self.logvar = nn.Linear(h[-1], L), nn.Linear(h[-1], L)
        rh = h[::-1]
        self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in zip([L] + rh[:-1], rh))
        self.out = nn.Linear(h[0], dim)
        self.act_params = nn.ParameterList(
            nn.ParameterDict({k: nn.Parameter(v) for k, v in act.initial(1, w).items()})
            for w in [*h, *h[::-1]])

    def _a(self, i, x):
        return self.act.apply(x.unsqueeze(0), dict(self.act_params[i])).squeeze(0)

    def forward(self, x):
        h = x
        for i, layer in enumerate(self.enc):
            h = self._a(i, layer(h))
        mu, logvar = self.mu(h), self.logvar(h)
        h = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        for i, layer in enumerate(self.dec):
            h = self._a(len(self.enc) + i, layer(h))
        return self.out(h), mu, logvar


class LoopConvVAE(nn.Module):
    """A textbook conv VAE (nn.Conv2d / nn.ConvTranspose2d, k=4, s=2, p=1) as ablate builds it."""

    def __init__(self, shape: tuple[int, int, int], config: RunConfig):
        super().__init__()
        self.act, self.shape = get_activation(config.activation), shape
        ch, L = [shape[0], *config.channels], config.latent_dim
        sizes = conv_sizes(shape, config.channels)
        self.maps = (ch[-1], *sizes[-1])
        flat = ch[-1] * sizes[-1][0] * sizes[-1][1]
        conv = lambda a, b: nn.Conv2d(a, b, KERNEL, STRIDE, PADDING)  # noqa: E731
        self.enc = nn.ModuleList(conv(a, b) for a, b in zip(ch[:-1], ch[1:]))
        self.mu, self.logvar = nn.Linear(flat, L), nn.Linear(flat, L)
        self.proj = nn.Linear(L, flat)
        self.dec = nn.ModuleList(
            nn.ConvTranspose2d(ch[i + 1], ch[i], KERNEL, STRIDE, PADDING,
                               (sizes[i][0] - 2 * sizes[i + 1][0], sizes[i][1] - 2 * sizes[i + 1][1]))
            for i in reversed(range(len(ch) - 1)))
        widths = [*config.channels, config.channels[-1], *config.channels[-2::-1]]
        self.act_params = nn.ParameterList(
            nn.ParameterDict({k: nn.Parameter(v) for k, v in self.act.initial(1, w).items()})
            for w in widths)

    def _a(self, i, x):
        return self.act.apply(x.unsqueeze(0), dict(self.act_params[i])).squeeze(0)

    def forward(self, x):
        h = x.view(-1, *self.shape)
        for i, layer in enumerate(self.enc):
            h = self._a(i, layer(h))
        h = h.flatten(1)
        mu, logvar = self.mu(h), self.logvar(h)
        h = self._a(len(self.enc), self.proj(mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)))
        h = h.view(-1, *self.maps)
        for i, layer in enumerate(self.dec):
            h = layer(h)
            if i < len(self.dec) - 1:
                h = self._a(len(self.enc) + 1 + i, h)
        return h.flatten(1), mu, logvar


def loop_train(members, x: torch.Tensor, epochs: int, shape: tuple[int, ...] | None = None) -> float:
    """Seconds to train every member one at a time, textbook style (a user's module: on
    images of `shape`)."""
    start = time.perf_counter()
    for m in members:
        torch.manual_seed(m.seed)
        if m.config.module:  # a user's module (workload 4), built by its factory
            own = build_member(m.config, shape, m.seed).to(x.device)
            model = lambda xb, own=own: _own_forward(own, xb, shape)  # noqa: E731
            params = own.parameters()
        else:
            model = (LoopConvVAE(CONV_SHAPE, m.config) if m.config.arch == "conv"
                     else LoopVAE(x.shape[1], m.config)).to(x.device)
            params = model.parameters()
        opt = torch.optim.Adam(params, lr=m.config.lr)
        loader = DataLoader(TensorDataset(x), batch_size=m.config.batch_size, shuffle=True)
        for _ in range(epochs):
            for (xb,) in loader:
                opt.zero_grad()
                logits, mu, logvar = model(xb)
                bce = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
                kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
                (bce + m.config.kl_weight * kl).backward()
                opt.step()
    synchronize(x.device)
    return time.perf_counter() - start


def fleet_train(members, x: torch.Tensor, epochs: int, shape: tuple[int, ...] | int | None = None) -> float:
    """Seconds to train every member together as one fleet (training epochs only)."""
    shape = shape or (CONV_SHAPE if members[0].config.arch == "conv" else x.shape[1])
    fleet = Fleet(members, shape, x.device)
    bs = members[0].config.batch_size
    fleet.model.tune(bs)  # each convolution's faster strategy, as a training cohort chooses it
    n, steps = len(x), math.ceil(len(x) / bs)
    synchronize(x.device)
    start = time.perf_counter()
    step = 0
    for _ in range(epochs):
        perms, eps = fleet.epoch_draws(n)
        for b in range(steps):
            idx = perms[:, b * bs:(b + 1) * bs]
            fleet.train_step(x[idx], eps[:, b * bs:(b + 1) * bs], fleet.beta(step, steps))
            step += 1
    synchronize(x.device)
    return time.perf_counter() - start


def _own_forward(model, xb: torch.Tensor, shape: tuple[int, ...]):
    """A user's module as the loop's model: logits, μ, log σ² of a batch."""
    mu, logvar = model.encode(xb.view(-1, *shape))
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    return model.decode(z).flatten(1), mu, logvar


def own_report(name: str, ways: dict, x: torch.Tensor, members: int, epochs: int, repeats: int) -> dict:
    """Time each way (a function of (x, epochs) → seconds), interleaved, best of `repeats`;
    print ms per member-epoch and each way's ratio to the first."""
    for fn in ways.values():  # warm-up
        fn(x[:256], 1)
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(repeats):
        for k, fn in ways.items():
            times[k].append(fn(x, epochs))
    best = {k: min(v) for k, v in times.items()}
    me = members * epochs
    print(f"\n[{name}] {members} members × {epochs} epochs × {len(x)} images on {x.device}")
    first = next(iter(best))
    for k, t in best.items():
        print(f"  {k:34s}: {t / me * 1e3:9.1f} ms per member-epoch (best of {repeats}; "
              f"worst {max(times[k]) / me * 1e3:.1f})" + ("" if k == first else f"   {first}/this: {best[first] / t:.2f}x"))
    return best


def own_workloads(device: torch.device, members: int, fraction: float, images: int, epochs: int,
                  repeats: int) -> None:
    """Workload 4 (the module docstring's)."""
    n = int(60000 * fraction)
    x = torch.rand(n, 784, generator=torch.Generator().manual_seed(0)).to(device)
    shape, acts = (1, 28, 28), ("relu", "gelu", "tanh", "silu")
    built_in = RunConfig(hidden=(400,), latent_dim=20, batch_size=128, init="default", epochs=epochs)
    own = RunConfig(module="examples.mlp_vae:make_vae", options='{"hidden": [400]}', latent_dim=20,
                    batch_size=128, epochs=epochs)
    seeds = range(members // len(acts))
    mine = [Member(f"{a}-{s}", replace(own, activation=a), s) for a in acts for s in seeds]
    theirs = [Member(f"{a}-{s}", replace(built_in, activation=a), s) for a in acts for s in seeds]
    by_act = [[m for m in mine if m.config.activation == a] for a in acts]
    own_report("workload 4(i): the built-in MLP VAE written as a module, 784-400-20", {
        "(a) the module, one at a time": lambda xx, e: loop_train(mine, xx, e, shape),
        "(b) the module's fleet (vmap)": lambda xx, e: fleet_train(mine, xx, e, shape),
        "(c) the built-in fleet": lambda xx, e: fleet_train(theirs, xx, e, 784),
        "(d) one cohort per activation": lambda xx, e: sum(fleet_train(g, xx, e, shape) for g in by_act),
    }, x, len(mine), epochs, repeats)
    conv = RunConfig(module="examples.resnet_vae:make_vae", options='{"width": 16}', latent_dim=16,
                     batch_size=128, epochs=epochs)
    res = [Member(f"{a}-{s}", replace(conv, activation=a), s) for a in acts for s in seeds]
    xc = x[:images]
    own_report("workload 4(ii): the residual GroupNorm VAE (examples/resnet_vae.py), width 16, 1×28×28", {
        "(a) the module, one at a time": lambda xx, e: loop_train(res, xx, e, shape),
        "(b) the module's fleet (vmap)": lambda xx, e: fleet_train(res, xx, e, shape),
    }, xc, len(res), epochs, repeats)


E2E_STUDY = """
name: e2e
dataset: {name: synthetic, n_train: 20000, n_test: 2000, dim: 784}
model: {hidden: [400], latent_dim: 20}
train: {epochs: 8, batch_size: 128}
seeds: 2
space: {activation: [relu, gelu, tanh, silu]}
checkpoint_minutes: 0
device: DEVICE
"""


def end_to_end(device: torch.device) -> None:
    """Workload 5: 8 MNIST-shaped members (784-400-20, 8 epochs on 20 000 synthetic images),
    `ablate run` end to end in this process — data, training, evaluation, report — against the
    textbook loop training the same members on the same training split (training only)."""
    import tempfile
    from pathlib import Path

    from ablate import timing
    from ablate.analysis.report import build_report
    from ablate.run.runner import run_study
    from ablate.study.loader import parse_study

    with tempfile.TemporaryDirectory() as tmp:
        text = E2E_STUDY.replace("DEVICE", device.type)
        study = parse_study(text, str(Path(tmp) / "e2e.yaml"))
        data = load_dataset(study.datasets[study.base.dataset])
        x = torch.as_tensor(data.x_train, device=device)
        members = [Member(f"{i}-{s}", study.config(p), s) for i, p in enumerate(study.points()) for s in study.seeds]
        loop_s = loop_train(members, x, study.base.epochs)
        start = time.perf_counter()
        out = run_study(study, Path(tmp) / "results", progress=False)
        with timing.phase("report"):
            build_report(study, out)
        wall = time.perf_counter() - start
    print(f"\n[workload 5: end to end] {len(members)} members × {study.base.epochs} epochs × {len(x)} "
          f"training images on {device}")
    print(f"  (a) the loop, training only  : {loop_s:7.1f} s")
    print(f"  (b) ablate run, end to end   : {wall:7.1f} s   (a)/(b) {loop_s / wall:.2f}x")
    for name, seconds, share in timing.breakdown(timing.taken(), wall):
        print(f"      {name:32s} {seconds:7.1f} s {share:5.0%}")


def matmul_peak(device: torch.device, size: int = 2048, reps: int = 10) -> float:
    """Measured fp32 GFLOP/s of a large square matmul on this device."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(device)
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


def train_flops(config: RunConfig, dim: int, n: int) -> float:
    """Matmul and convolution FLOPs of one member-epoch: forward 2·MACs, backward 4·MACs."""
    macs, flat = 0, dim
    if config.arch == "conv":
        ch, sizes = [CONV_SHAPE[0], *config.channels], conv_sizes(CONV_SHAPE, config.channels)
        flat = ch[-1] * sizes[-1][0] * sizes[-1][1]
        # a conv and its transposed mirror each do c_in·c_out·k² MACs per output (input) pixel
        macs = sum(2 * a * b * KERNEL**2 * hw[0] * hw[1] for a, b, hw in zip(ch[:-1], ch[1:], sizes[1:]))
    widths = [flat, *config.hidden]  # encoder and mirrored decoder, μ and log σ² heads, z → decoder
    macs += 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:])) + 3 * widths[-1] * config.latent_dim
    return 6.0 * macs * n


def report(name: str, members, x: torch.Tensor, epochs: int, peak: float, repeats: int) -> None:
    half = [Member(m.key, replace(m.config, dtype="bf16"), m.seed) for m in members]
    loop_train(members[:1], x[:256], 1)  # warm-up: allocator, kernels, DataLoader
    fleet_train(members, x[:256], 1)
    fleet_train(half, x[:256], 1)
    loop_times, fleet_times, bf16_times = [], [], []
    for _ in range(repeats):  # interleaved, so slow spells of a shared machine hit both
        loop_times.append(loop_train(members, x, epochs))
        fleet_times.append(fleet_train(members, x, epochs))
        bf16_times.append(fleet_train(half, x, epochs))
    loop_s, fleet_s = min(loop_times), min(fleet_times)  # best of `repeats`, as timeit advises
    me = len(members) * epochs
    flops = sum(train_flops(m.config, x.shape[1], len(x)) for m in members) * epochs
    gflops = flops / fleet_s / 1e9
    print(f"\n[{name}] {len(members)} members × {epochs} epochs × {len(x)} images on {x.device}")
    spread = lambda ts: f"(best of {len(ts)}; worst {max(ts) / me * 1e3:.1f})"  # noqa: E731
    print(f"  (a) one model at a time : {loop_s / me * 1e3:9.1f} ms per member-epoch {spread(loop_times)}")
    print(f"  (b) fleet               : {fleet_s / me * 1e3:9.1f} ms per member-epoch {spread(fleet_times)}")
    print(f"  ratio (a)/(b)           : {loop_s / fleet_s:9.2f}x   "
          f"(median ratio {sorted(a / b for a, b in zip(loop_times, fleet_times))[len(loop_times) // 2]:.2f}x)")
    print(f"  (c) fleet, bf16 autocast: {min(bf16_times) / me * 1e3:9.1f} ms per member-epoch "
          f"{spread(bf16_times)}; (a)/(c) {loop_s / min(bf16_times):.2f}x, (b)/(c) {fleet_s / min(bf16_times):.2f}x")
    loop_gflops = flops / loop_s / 1e9
    print(f"  fleet throughput        : {gflops:9.1f} GFLOP/s = {gflops / peak:.0%} of the "
          f"measured matmul peak ({peak:.0f} GFLOP/s)")
    print(f"  loop throughput         : {loop_gflops:9.1f} GFLOP/s = {loop_gflops / peak:.0%} of it, "
          f"so no fleet can beat the loop by more than {peak / loop_gflops:.1f}x here")


def grouped_vs_vmap(device: torch.device, members: int, repeats: int) -> None:
    """One conv layer of `members` members (32 → 64 channels, 14×14 → 7×7, batch 128), forward
    and backward: the fleet's grouped convolution against torch.func.vmap over F.conv2d."""
    layer = Conv(members, 32, 64)
    for i in range(members):
        layer.init_member(i, torch.Generator().manual_seed(i), "kaiming", math.sqrt(2))
    layer.place(device)
    w, b = layer.slots["w"].tensor, layer.slots["b"].tensor
    x = torch.randn(members, 128, 32, 14, 14, device=device)
    vmapped = torch.func.vmap(lambda xm, wm, bm: F.conv2d(xm, wm, bm, STRIDE, PADDING))
    ways = {"grouped conv (groups=N)": layer, "vmap(F.conv2d)": lambda h: vmapped(h, w, b)}
    times = {k: [] for k in ways}
    for _ in range(repeats + 1):  # the first round warms up
        for name, fn in ways.items():
            synchronize(device)
            start = time.perf_counter()
            fn(x).square().sum().backward()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    print(f"\n[conv layer] {members} members, 32→64 channels, 14×14→7×7, batch 128, fwd+bwd")
    for name, ts in times.items():
        print(f"  {name:24s}: {min(ts[1:]) * 1e3:9.1f} ms (best of {repeats})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["mnist", "quick", "conv", "own", "e2e", "all"], default="all")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--members", type=int, default=16, help="mnist workload: 4 activations × members/4 seeds")
    ap.add_argument("--fraction", type=float, default=0.1, help="share of MNIST's 60 000 images")
    ap.add_argument("--conv-images", type=int, default=1024, help="conv workload: images per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each; the best counts")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    peak = matmul_peak(device)
    print(f"device {device}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"fp32 matmul peak {peak:.0f} GFLOP/s")
    if args.workload in ("mnist", "all"):
        n = int(60000 * args.fraction)
        x = torch.rand(n, 784, generator=torch.Generator().manual_seed(0)).to(device)
        config = RunConfig(hidden=(400,), latent_dim=20, batch_size=128, epochs=args.epochs)
        acts = ("relu", "gelu", "tanh", "silu")
        members = [Member(f"{a}-{s}", replace(config, activation=a), s)
                   for a in acts for s in range(args.members // len(acts))]
        report("workload 1: MNIST-shaped 784-400-20", members, x, args.epochs, peak, args.repeats)
    if args.workload in ("quick", "all"):
        study = load_study("studies/quick.yaml")
        data = load_dataset(study.datasets[study.base.dataset])
        x = torch.as_tensor(data.x_train, device=device)
        members = [Member(f"{i}-{s}", replace(study.config(p), epochs=args.epochs), s)
                   for i, p in enumerate(study.points()) for s in study.seeds]
        report("workload 2: studies/quick.yaml grid on digits", members, x, args.epochs, peak, args.repeats)
    if args.workload in ("conv", "all"):
        x = torch.rand(args.conv_images, 784, generator=torch.Generator().manual_seed(0)).to(device)
        config = RunConfig(arch="conv", channels=(32, 64), hidden=(), latent_dim=16, batch_size=128,
                           epochs=args.epochs)
        acts = ("relu", "gelu", "tanh", "silu")
        members = [Member(f"{a}-{s}", replace(config, activation=a), s)
                   for a in acts for s in range(args.members // len(acts))]
        report("workload 3: conv 28×28, channels [32, 64], latent 16", members, x, args.epochs,
               peak, args.repeats)
        grouped_vs_vmap(device, args.members, args.repeats)
    if args.workload in ("own", "all"):
        own_workloads(device, args.members, args.fraction, args.conv_images, args.epochs, args.repeats)
    if args.workload in ("e2e", "all"):
        end_to_end(device)


if __name__ == "__main__":
    main()
