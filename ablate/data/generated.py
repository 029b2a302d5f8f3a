"""Datasets the program makes itself, with nothing to download: binary sprites drawn from a grid
of known factors, and patches of the two photographs scikit-learn ships.

Owns: `sprites` (images in the spirit of dSprites, Matthey et al. 2017: a square, ellipse or
heart at a scale, orientation and position, rasterised in NumPy; the label is the shape, and
every row carries its factor indices), `patches` (square patches of china.jpg and flower.jpg at
seeded positions, `patch_positions`; the label is the photograph), and their options
(`FORMATS`). Does not own: the splits and caps every dataset gets (datasets.py).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np

from ablate.data.dataset import Dataset
from ablate.errors import UserError

SHAPES = ("square", "ellipse", "heart")
SPRITE_FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")
SPRITE_SIDES = (32, 64)
REACH = 0.25
"""How far the largest sprite reaches from its centre, as a share of the image's side: at scale 1
every shape, at every orientation, lies inside a disc of this radius."""
MIN_SCALE = 0.5
"""The smallest of the evenly spaced scales; the largest is 1."""
MAX_GRID = 2**22
"""The most factor combinations a sprites grid may hold (its seeded permutation is kept whole)."""
MAX_VALUES = 2**28
"""The most pixel values a generated dataset may hold (1 GiB as float32)."""
_CHUNK = 512
"""Sprites rasterised at once, bounding the temporaries (each _CHUNK × side² float32)."""
TILE = 64
"""Each photograph is cut into TILE × TILE tiles (or the patch's side, when larger); a patch
lies wholly inside one tile."""
HELD_OUT = 5
"""One in HELD_OUT of each photograph's tiles, scattered at fixed random (TILE_SEED), holds the
test patches; the rest hold the training patches."""
TILE_SEED = 0
LUMA = (0.299, 0.587, 0.114)
"""Greyscale weights of red, green and blue (ITU-R BT.601)."""


def _whole(options: dict[str, Any], key: str, default: int, what: str, lo: int = 1,
           hi: int | None = None) -> int:
    """A whole-number option (`default` when absent), refused outside [lo, hi] in one line."""
    v = options.get(key, default)
    whole = isinstance(v, (int, np.integer)) and not isinstance(v, bool)
    if not whole or v < lo or (hi is not None and v > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise UserError(f"dataset.{key} must be a whole number {bound} ({what}), got {v!r}.")
    return int(v)


def _check_volume(n: int, values: int) -> None:
    """Refuse a dataset of `n` rows of `values` each that would not fit MAX_VALUES."""
    if n * values > MAX_VALUES:
        raise UserError(f"dataset: {n:,} images of {values:,} values each are {n * values:,} values, "
                        f"more than the {MAX_VALUES:,} (1 GiB) a generated dataset may hold; ask for "
                        "fewer with dataset.n_train and dataset.n_test.")


# Each shape's inside test, in coordinates where the shape fits the unit disc (v points up).
def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= np.float32(0.5**0.5)  # corners on the unit circle


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + 4 * v * v <= 1  # semi-axes 1 and 1/2


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # The classic heart (x² + y² − 1)³ ≤ x²y³; its smallest enclosing disc, centre (0, 0.25) and
    # radius 1.25, moved onto the unit disc with a little room to spare.
    x, y = np.float32(1.26) * u, np.float32(1.26) * v + np.float32(0.25)
    s = x * x + y * y - 1
    return s * s * s <= x * x * y * y * y


_INSIDE = (_square, _ellipse, _heart)


def sprite_values(side: int, scales: int, orientations: int, positions: int) -> tuple[np.ndarray, ...]:
    """Each factor's values, in SPRITE_FACTORS order: the shape's index, the scale (a share of the
    largest sprite), the angle (radians, counter-clockwise, evenly over [0, 2π)), and the centre's
    column and row in pixels from the top-left corner. Centres span the free area for the largest
    sprite, leaving at least one dark pixel between any sprite and the image's edge."""
    reach = REACH * side
    pos = np.linspace(reach + 1, side - reach - 1, positions) if positions > 1 else np.full(1, side / 2)
    scale = np.linspace(MIN_SCALE, 1.0, scales) if scales > 1 else np.ones(1)
    angle = 2 * np.pi * np.arange(orientations) / orientations
    return np.arange(len(SHAPES)), scale, angle, pos, pos


def render_sprites(factors: np.ndarray, values: tuple[np.ndarray, ...], side: int) -> np.ndarray:
    """Sprites of the factor indices `factors` (n ≥ 1, 5) into `values` → (n, side²) float32 0/1
    rows. A pixel is lit when its centre, turned back by the angle and divided by the sprite's
    reach, passes the shape's inside test."""
    return np.concatenate([_rasterise(factors[i:i + _CHUNK], values, side)
                           for i in range(0, len(factors), _CHUNK)])


def _rasterise(f: np.ndarray, values: tuple[np.ndarray, ...], side: int) -> np.ndarray:
    _, scale, angle, cx, cy = (v[f[:, k]].astype(np.float32)[:, None] for k, v in enumerate(values))
    centres = np.arange(side, dtype=np.float32) + np.float32(0.5)
    dx = np.tile(centres, side)[None] - cx  # rightwards, pixels in row-major order
    dy = cy - np.repeat(centres, side)[None]  # upwards
    reach = scale * np.float32(REACH * side)
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = (cos * dx + sin * dy) / reach, (cos * dy - sin * dx) / reach
    out = np.zeros(u.shape, np.float32)
    for k, inside in enumerate(_INSIDE):
        rows = f[:, 0] == k
        out[rows] = inside(u[rows], v[rows])
    return out


def _sprite_counts(options: dict[str, Any], grid: int, side: int) -> tuple[int, int]:
    """How many distinct factor combinations the test and training splits take: n_test (default
    the test_fraction of the grid) and n_train (default the rest of the grid)."""
    if grid > MAX_GRID:
        raise UserError(f"dataset: the sprites' factor grid holds {grid:,} combinations, more than "
                        f"{MAX_GRID:,}; lower dataset.positions, dataset.orientations or "
                        "dataset.scales.")
    fraction = options.get("test_fraction", 1 / 6)
    if not 0 < fraction < 1:
        raise UserError(f"dataset.test_fraction must be between 0 and 1, got {fraction!r}; the test "
                        "split needs at least one sprite and so does the training split.")
    n_test = _whole(options, "n_test", max(1, round(fraction * grid)), "test sprites")
    n_train = _whole(options, "n_train", max(1, grid - n_test), "training sprites")
    if n_train + n_test > grid:
        raise UserError(f"dataset.n_train + dataset.n_test ask for {n_train + n_test:,} sprites, but "
                        f"the factor grid holds {grid:,} combinations and no combination is drawn "
                        "twice; ask for fewer, or more dataset.scales, dataset.orientations or "
                        "dataset.positions.")
    _check_volume(n_train + n_test, side * side)
    return n_test, n_train


def _sprites(options: dict[str, Any]) -> Dataset:
    """Sprites of side `size` (32 or 64) on the grid of 3 shapes × `scales` (4) × `orientations`
    (8) × `positions`² (8 × 8) factor values, split by a seeded (`seed`, 0) permutation of the
    grid: the test split is its first `n_test` combinations (default `test_fraction`, 1/6, of the
    grid: 1024 of 6144), the training split the next `n_train` (default all the rest), each in
    grid order; so no combination is drawn twice, and the test split stays put as n_train
    changes."""
    side = options.get("size", 32)
    if isinstance(side, bool) or not isinstance(side, int) or side not in SPRITE_SIDES:
        raise UserError(f"dataset.size must be 32 or 64 for sprites (the image's side in pixels), "
                        f"got {side!r}.")
    sizes = (len(SHAPES), _whole(options, "scales", 4, "sizes of each shape"),
             _whole(options, "orientations", 8, "angles over a full turn"),
             *2 * [_whole(options, "positions", 8, "centres along each axis")])
    n_test, n_train = _sprite_counts(options, math.prod(sizes), side)
    rng = np.random.default_rng(_whole(options, "seed", 0, "the draw's seed", lo=0))
    order = rng.permutation(math.prod(sizes))
    f_tr, f_te = (np.stack(np.unravel_index(np.sort(i), sizes), 1).astype(np.int64)
                  for i in (order[n_test:n_test + n_train], order[:n_test]))
    values = sprite_values(side, *sizes[1:4])
    return Dataset("sprites", render_sprites(f_tr, values, side), render_sprites(f_te, values, side),
                   f_tr[:, 0].copy(), f_te[:, 0].copy(), (1, side, side), factor_names=SPRITE_FACTORS,
                   factor_sizes=sizes, f_train=f_tr, f_test=f_te)


@cache
def _photographs() -> np.ndarray:
    """scikit-learn's china.jpg and flower.jpg, stacked (2, 427, 640, 3) uint8, read-only."""
    from sklearn.datasets import load_sample_images

    photos = np.stack(load_sample_images().images)
    photos.setflags(write=False)
    return photos


def held_out_tiles(side: int, shape: tuple[int, int, int]) -> tuple[int, np.ndarray]:
    """The tile side, and which tiles (photograph, tile row, tile column) of photographs of
    `shape` (count, height, width) hold the test split: bool (count, rows, columns), a fixed
    random 1/HELD_OUT of each photograph's tiles (at least one), whatever the study's seed."""
    count, height, width = shape
    tile = max(TILE, side)
    rows, cols = height // tile, width // tile
    held = np.zeros((count, rows, cols), dtype=bool)
    rng = np.random.default_rng(TILE_SEED)
    for p in range(count):
        chosen = rng.permutation(rows * cols)[:max(1, rows * cols // HELD_OUT)]
        held[p].flat[chosen] = True
    return tile, held


def patch_positions(n: int, side: int, seed: int, test: bool,
                    shape: tuple[int, int, int]) -> np.ndarray:
    """Top-left corners (photograph, row, column), int64 (n, 3), of `n` patches of side `side` in
    photographs of `shape` (count, height, width): each in a tile of its split (`held_out_tiles`)
    drawn uniformly at seeded random, at a uniform position inside it (the test split's stream
    apart from the training split's). Tiles do not overlap, so no test patch overlaps a training
    patch (patches of one split may overlap one another); held-out tiles are scattered over
    both photographs, so the test split sees the same kinds of scene as training."""
    tile, held = held_out_tiles(side, shape)
    where = np.argwhere(held if test else ~held)  # (tiles, 3): photograph, tile row, tile column
    rng = np.random.default_rng([seed, int(test)])
    picked = where[rng.integers(0, len(where), n)]
    offsets = rng.integers(0, tile - side + 1, (n, 2))
    return np.stack([picked[:, 0], picked[:, 1] * tile + offsets[:, 0],
                     picked[:, 2] * tile + offsets[:, 1]], 1).astype(np.int64)


def _cut(photos: np.ndarray, corners: np.ndarray, side: int, colour: bool) -> np.ndarray:
    """The patches at `corners` → (n, C·side²) float32 in [0, 1], channels first."""
    offsets = np.arange(side)
    rows, cols = corners[:, 1, None, None] + offsets[:, None], corners[:, 2, None, None] + offsets
    pixels = photos[corners[:, 0, None, None], rows, cols].astype(np.float32) / 255  # (n, s, s, 3)
    if colour:
        return pixels.transpose(0, 3, 1, 2).reshape(len(pixels), -1)
    return np.clip(pixels @ np.asarray(LUMA, np.float32), 0, 1).reshape(len(pixels), -1)


def _patches(options: dict[str, Any]) -> Dataset:
    """`n_train` (4000) and `n_test` (1000) patches of side `size` (16) at seeded (`seed`, 0)
    positions, greyscale or (`colour`: true) RGB, labelled by their photograph (0 china, 1
    flower): a label that is there in every patch, for the probe and the sample-quality judge."""
    photos = _photographs()
    most = photos.shape[1] // 2
    side = _whole(options, "size", 16, "the patch's side in pixels; the photographs must hold at least "
                  f"two tiles of it, so at most {most}", lo=2, hi=most)
    n_train = _whole(options, "n_train", 4000, "training patches")
    n_test = _whole(options, "n_test", 1000, "test patches")
    colour = options.get("colour", False)
    if not isinstance(colour, bool):
        raise UserError(f"dataset.colour must be true (RGB patches) or false (greyscale), "
                        f"got {colour!r}.")
    channels = 3 if colour else 1
    _check_volume(n_train + n_test, channels * side * side)
    seed = _whole(options, "seed", 0, "the positions' seed", lo=0)
    tr, te = (patch_positions(n, side, seed, test, photos.shape[:3])
              for n, test in ((n_train, False), (n_test, True)))
    return Dataset("patches", _cut(photos, tr, side, colour), _cut(photos, te, side, colour),
                   tr[:, 0].copy(), te[:, 0].copy(), (channels, side, side))


FORMATS = {
    "sprites": (_sprites, {"size": int, "scales": int, "orientations": int, "positions": int,
                           "n_train": int, "n_test": int, "test_fraction": "fraction", "seed": "seed"}),
    "patches": (_patches, {"size": int, "n_train": int, "n_test": int, "colour": bool, "seed": "seed"}),
}
"""name → (loader, the options it accepts besides datasets.COMMON_OPTIONS)."""
