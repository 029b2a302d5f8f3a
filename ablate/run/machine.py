"""The machine a run trains on: the device, its memory, and what it was.

Owns: resolving `device: auto` (TF32 off on CUDA, so numbers compare across machines), the
memory a member needs and how many fit in a cohort (a study whose largest member alone does not
fit is refused), the memory free on the device or host (a container's limit too), telling an
out-of-memory error, the environment that produced the numbers (versions, git commit, CPU),
and each activation's measured cost per element. Does not own: the run loop (runner.py).
"""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from ablate.data.dataset import Dataset
from ablate.errors import UserError
from ablate.nets.models import activation_floats, param_count
from ablate.streams import FIXED_SEED
from ablate.study.schema import Study


def resolve_device(name: str) -> torch.device:
    """`auto` → the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: '{name}' was asked for but no CUDA device is available; "
                        "use device: auto or cpu.")
    device = torch.device(name)
    if device.type == "cuda":  # full fp32 so numbers compare across machines
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def cohort_capacity(study: Study, data: Dataset, device: torch.device) -> int:
    """Members per cohort: what fits in half the free device memory, capped by cohort_size.
    A study whose largest member alone does not fit is refused with the estimate."""
    free, per_member = free_memory(device), member_bytes(study, data)
    if per_member > free:
        raise UserError(f"{study.path}: its largest member needs about {per_member / 2**30:.1f} GiB "
                        f"(weights, Adam's moments, a batch's activations) and {device} has "
                        f"{free / 2**30:.1f} GiB free; make hidden, channels, latent_dim or "
                        "batch_size smaller.")
    cap = max(1, int(free * 0.5) // per_member)
    return min(cap, study.cohort_size) if study.cohort_size else cap


def free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_ram()


def member_bytes(study: Study, data: Dataset) -> int:
    """An estimate of one member's memory in training: its weights, gradients and Adam's two
    moments, its widest batch of activations, and its per-image records."""
    shape = data.image_shape or data.dim
    configs = [study.config(p) for p in study.corners()]
    worst = max(configs, key=lambda c: param_count(c, shape))
    n = len(data.x_train)
    params = param_count(worst, shape)
    widest = max(activation_floats(c, shape) for c in configs) + data.dim * 3 + worst.latent_dim * 6
    return 4 * (4 * params + 4 * worst.batch_size * widest + n * (worst.latent_dim + 2))


def available_ram() -> int:
    """Host memory this process may still use: MemAvailable, or less under a cgroup limit
    (a container's memory.max, which /proc/meminfo does not show)."""
    free = 4 << 30
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return free


def environment(device: torch.device) -> dict:
    """What produced the numbers: versions, the code's git commit, the machine."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    root = Path(__file__).resolve().parents[2]  # the repository (ablate/run/machine.py)
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "ablate"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = (commit + (" (with uncommitted changes)" if dirty else "")) if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"python": platform.python_version(), "ablate": ver("ablate"), "torch": torch.__version__,
            "numpy": np.__version__, "optuna": optuna.__version__, "pandas": ver("pandas"),
            "scipy": ver("scipy"), "scikit-learn": ver("scikit-learn"), "git_commit": commit,
            "cpu": f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
            "platform": platform.platform()}


COST_ELEMENTS = 1 << 16
"""Elements per call of the activation-cost measurement, as a stacked layer (4, 1, 2¹⁴): 256
KiB of float32 that stays in cache, so every study measures the activation's arithmetic the
same way, not the memory bus of the moment."""


def activation_cost(names: list[str], device: torch.device, elements: int = COST_ELEMENTS,
                    samples: int = 9, calls: int = 20, warmup: int = 5) -> dict[str, dict]:
    """Each activation's forward + backward time per element on `device`: {name: {"median",
    "q25", "q75": ns per element, "samples", "elements", "threads"}}.

    Fleet members share every step, so wall time cannot be split by activation; this is the
    part of the cost that differs between activations (the matmuls are the same for all).
    After `warmup` calls each, `samples` samples are taken round-robin over the activations
    (a noisy spell of the machine hits every one), each timing `calls` calls so that a sample
    lasts milliseconds; the median and quartiles of the samples are reported. On the CPU it
    runs on one torch thread (the previous count is restored after) and counts that thread's
    CPU time, so another process taking turns on the cores is not counted (on 2 cores, two
    busy processes doubled the wall time but not this); on an accelerator, wall time, each
    sample synchronised."""
    threads = torch.get_num_threads()
    try:
        if device.type == "cpu":
            torch.set_num_threads(1)
        steps = {name: _cost_step(name, device, elements) for name in names}
        times = _cost_samples(steps, device, samples, calls, warmup)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    out = {}
    for name, seconds in times.items():
        q25, median, q75 = np.percentile(np.asarray(seconds) / (calls * elements) * 1e9, [25, 50, 75])
        out[name] = {"median": float(median), "q25": float(q25), "q75": float(q75),
                     "samples": samples, "elements": elements, "threads": used}
    return out


def _cost_step(name: str, device: torch.device, elements: int):
    """One forward + backward of activation `name` on a stacked layer (G=4, B=1, H) of
    `elements` values (maxout:K's K pieces per unit among them), gradients taken for the input
    and the learnable parameters."""
    from ablate.nets.nonlinear import get_activation

    act = get_activation(name)
    gen = torch.Generator(device=device).manual_seed(FIXED_SEED)
    x = torch.randn(4, 1, elements // 4, device=device, generator=gen).requires_grad_(True)
    params = {k: v.to(device).requires_grad_(True) for k, v in act.initial(4, x.shape[-1]).items()}
    inputs = [x, *params.values()]
    with torch.no_grad():
        grad = torch.ones_like(act.apply(x, params))  # maxout's is its units', not its inputs'

    def step() -> None:
        torch.autograd.grad(act.apply(x, params), inputs, grad, allow_unused=True)

    return step


def _cost_samples(steps: dict, device: torch.device, samples: int, calls: int,
                  warmup: int) -> dict[str, list[float]]:
    """Seconds of `calls` calls of each step, `samples` times, round-robin over the steps: the
    calling thread's CPU time on the CPU (every op runs on it with one torch thread), wall
    time on an accelerator (CUDA), synchronised before and after."""
    cpu = device.type == "cpu"
    sync = (lambda _: None) if cpu else torch.accelerator.synchronize
    clock = time.thread_time if cpu else time.perf_counter
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(samples):
        for name, step in steps.items():
            sync(device)
            t0 = clock()
            for _ in range(calls):
                step()
            sync(device)
            times[name].append(clock() - t0)
    return times


def out_of_memory(exc: BaseException) -> bool:
    """An allocation failure of the device (CUDA) or of the host (PyTorch's CPU allocator)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text
                                              or "out of memory" in text.lower())


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
