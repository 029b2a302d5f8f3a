"""Every source of randomness, named in one place. Torch-free.

Owns: the member's random streams (each member draws from generators seeded by its own seed
and a stream, never from a global generator, so its numbers do not depend on the other members
of its cohort), the mixer that turns (seed, stream) into a generator's seed, and the fixed
seeds of what is drawn once per study or dataset (validation split, size caps, the classifier,
tuning members). Changing any of these changes every stored study's numbers.
"""

from __future__ import annotations

from enum import IntEnum


class Stream(IntEnum):
    """A member's random streams."""

    INIT = 1
    """Its weights' initial values, layer by layer in the model's draw order."""
    TRAIN = 2
    """Its data order and reparameterisation (or generator) noise, per epoch."""
    EVAL = 3
    """Noise of every evaluation pass (the same at each evaluation)."""
    IMAGES = 4
    """The prior draws of its sample images."""
    MASKS = 5
    """Dropout masks and a denoising autoencoder's corruption while training."""
    SAMPLES = 6
    """The prior draws its sample quality (FID, KID, precision, recall) is measured on."""


def stream_seed(seed: int, stream: Stream) -> int:
    """A well-mixed 63-bit seed for one of a member's random streams: a SplitMix64 finaliser.
    numpy's SeedSequence would mix as well, but gives other seeds, so every study already in a
    store would stop reproducing; this mixer stays."""
    x = (seed * 0x9E3779B97F4A7C15 + int(stream) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & (2**64 - 1)
    return (x ^ (x >> 29)) & (2**63 - 1)


VAL_SEED = 3
"""The stratified validation split of a dataset's training images."""
CAP_SEEDS = {"train": 1, "test": 2}
"""Which images a `train_size` or `test_size` keeps."""
CLASSIFIER_SEED = 7
"""The dataset's classifier for sample quality (its init and data order)."""
TUNING_SEED = 1_000_003
"""The seed of the tuned protocol's tuning members (apart from the study's own seeds)."""
FIXED_SEED = 0
"""Draws whose values do not matter (a model rebuilt only to be overwritten, timing probes)."""
