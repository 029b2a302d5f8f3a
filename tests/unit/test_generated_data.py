"""The generated datasets: sprites rendered from a factor grid (deterministic, binary, inside the
frame, each factor moving pixels, factors aligned with rows through caps and the validation
split) and patches of scikit-learn's two photographs (at the reported seeded positions, test
patches only from the held-out region); bad options refused naming the key."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ablate.data.datasets import DATASET_OPTIONS, load_dataset
from ablate.data.generated import (FORMATS, LUMA, SPRITE_FACTORS, patch_positions, render_sprites, held_out_tiles,
                                   sprite_values)
from ablate.errors import UserError

GRID = (3, 4, 8, 8, 8)  # the default sprites grid: shapes, scales, orientations, pos_x, pos_y
sprites, patches = FORMATS["sprites"][0], FORMATS["patches"][0]


@pytest.fixture(scope="module")
def grid():
    """The default sprites dataset, loaded twice."""
    return sprites({}), sprites({})


def _images(x: np.ndarray, side: int) -> np.ndarray:
    return x.reshape(len(x), side, side)


def _one(f, side=32, values=None):
    """The sprite of one factor combination, (side, side)."""
    values = values or sprite_values(side, *GRID[1:4])
    return render_sprites(np.array([f]), values, side).reshape(side, side)


def test_sprites_are_deterministic_binary_and_inside_the_frame(grid):
    a, b = grid
    assert a.x_train.tobytes() == b.x_train.tobytes() and a.x_test.tobytes() == b.x_test.tobytes()
    assert a.x_train.dtype == np.float32 and a.image_shape == (1, 32, 32)
    x = _images(np.concatenate([a.x_train, a.x_test]), 32)
    assert set(np.unique(x)) == {0.0, 1.0}
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    assert not border.any(), "no lit pixel on the outermost rows and columns"
    assert x.sum((1, 2)).min() >= 9, "every sprite, the smallest included, shows"


def test_the_whole_grid_is_split_once_with_factors_aligned(grid):
    data = grid[0]
    assert data.factor_names == SPRITE_FACTORS == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert data.factor_sizes == GRID
    assert (len(data.x_train), len(data.x_test)) == (5120, 1024)  # a sixth of 6144 is held out
    both = np.concatenate([data.f_train, data.f_test])
    assert both.dtype == np.int64 and len(np.unique(both, axis=0)) == np.prod(GRID)
    assert (both.min(0) == 0).all() and (both.max(0) == np.array(GRID) - 1).all()
    for x, y, f in ((data.x_train, data.y_train, data.f_train), (data.x_test, data.y_test, data.f_test)):
        np.testing.assert_array_equal(y, f[:, 0])
        np.testing.assert_array_equal(render_sprites(f, sprite_values(32, 4, 8, 8), 32), x)


@pytest.mark.parametrize("base", [(0, 0, 0, 0, 0), (1, 2, 3, 4, 5), (2, 3, 7, 7, 7), (2, 1, 2, 3, 1)])
@pytest.mark.parametrize("factor", range(5))
def test_each_factor_moves_pixels(base, factor):
    other = list(base)
    other[factor] = (base[factor] + 1) % GRID[factor]
    assert (_one(base) != _one(other)).any()


def test_a_position_step_is_a_two_pixel_shift_right_or_down():
    # at 32 × 32 the centres lie on whole pixels 9, 11, …, 23: a step translates the image exactly
    for f in ((0, 3, 1, 2, 5), (1, 0, 3, 0, 0), (2, 2, 6, 6, 1)):
        right, down = list(f), list(f)
        right[3] += 1
        down[4] += 1
        np.testing.assert_array_equal(_one(right), np.roll(_one(f), 2, axis=1))
        np.testing.assert_array_equal(_one(down), np.roll(_one(f), 2, axis=0))


def test_the_shapes_are_an_upright_square_ellipse_and_heart_turned_counter_clockwise():
    square, ellipse, heart = (_one((k, 3, 0, 3, 3)) for k in range(3))
    rows, cols = np.flatnonzero(square.any(1)), np.flatnonzero(square.any(0))
    assert len(rows) == len(cols) >= 10 and square[rows][:, cols].all()  # a solid axis-aligned square
    assert square.sum() == len(rows) ** 2
    width, height = np.flatnonzero(ellipse.any(0)), np.flatnonzero(ellipse.any(1))
    assert len(width) == pytest.approx(2 * len(height), abs=2)  # lying down, twice as wide as tall
    runs = lambda row: int(np.diff(np.concatenate([[0], row, [0]])).clip(0).sum())  # noqa: E731
    lit = np.flatnonzero(heart.any(1))
    assert runs(heart[lit[0]]) == 2 and runs(heart[lit[-1]]) == 1  # two lobes up, a point down
    assert heart[lit[-1]].sum() < heart[lit[0]].sum()
    rows, cols = np.nonzero(_one((1, 3, 1, 3, 3)))  # the angle turns counter-clockwise:
    assert np.corrcoef(rows, cols)[0, 1] < -0.5  # at 45° the ellipse runs up to the right
    turned = _one((0, 3, 2, 3, 3))  # a quarter turn leaves a square as it was
    np.testing.assert_array_equal(turned, square)


def test_drawn_sprites_are_distinct_seeded_and_keep_their_test_split():
    a = sprites({"n_train": 300, "n_test": 100, "seed": 5})
    more = sprites({"n_train": 600, "n_test": 100, "seed": 5})
    other = sprites({"n_train": 300, "n_test": 100, "seed": 6})
    assert (len(a.x_train), len(a.x_test)) == (300, 100)
    pairs = np.concatenate([a.f_train, a.f_test])
    assert len(np.unique(pairs, axis=0)) == 400, "no combination drawn twice, none shared by the splits"
    np.testing.assert_array_equal(more.f_test, a.f_test)  # the test split does not move with n_train
    assert not np.array_equal(other.f_test, a.f_test)


def test_sprites_at_64_pixels():
    data = sprites({"size": 64, "n_train": 500, "n_test": 100, "positions": 5})
    assert data.image_shape == (1, 64, 64) and data.x_train.shape == (500, 64 * 64)
    x = _images(data.x_train, 64)
    assert set(np.unique(x)) == {0.0, 1.0} and x.sum((1, 2)).min() >= 36
    assert not np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1).any()
    assert data.factor_sizes == (3, 4, 8, 5, 5)
    np.testing.assert_array_equal(render_sprites(data.f_test, sprite_values(64, 4, 8, 5), 64), data.x_test)


def test_sprites_through_load_dataset_carry_their_factors():
    data = load_dataset({"name": "sprites", "train_size": 600, "test_size": 200}, unit=True)
    values = sprite_values(32, 4, 8, 8)
    for x, y, f in ((data.x_train, data.y_train, data.f_train), (data.x_val, data.y_val, data.f_val),
                    (data.x_test, data.y_test, data.f_test)):
        assert len(x) == len(y) == len(f) and np.isfinite(x).all()
        np.testing.assert_array_equal(y, f[:, 0])
        np.testing.assert_array_equal(render_sprites(f, values, 32), x)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (540, 60, 200)
    whole = load_dataset({"name": "sprites", "val_fraction": 0})
    assert whole.x_val is None and whole.f_val is None and len(whole.f_train) == 5120


def test_patches_come_from_the_photographs_at_the_reported_positions():
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    grey = patches({"size": 8, "n_train": 40, "n_test": 30, "seed": 3})
    colour = patches({"size": 8, "n_train": 40, "n_test": 30, "seed": 3, "colour": True})
    assert grey.image_shape == (1, 8, 8) and colour.image_shape == (3, 8, 8)
    for test, (g, c, y) in ((False, (grey.x_train, colour.x_train, grey.y_train)),
                            (True, (grey.x_test, colour.x_test, grey.y_test))):
        corners = patch_positions(len(g), 8, 3, test, (2, *photos[0].shape[:2]))
        np.testing.assert_array_equal(y, corners[:, 0])
        for i in (0, len(g) - 1):
            p, r, col = corners[i]
            block = photos[p][r:r + 8, col:col + 8].astype(np.float64) / 255
            np.testing.assert_allclose(c[i], block.transpose(2, 0, 1).reshape(-1), atol=1e-6)
            np.testing.assert_allclose(g[i], (block @ LUMA).reshape(-1), atol=1e-6)


def test_patch_positions_are_seeded_and_held_out_tiles_are_held_out():
    shape = (2, 427, 640)
    train, test = patch_positions(20000, 16, 0, False, shape), patch_positions(5000, 16, 0, True, shape)
    np.testing.assert_array_equal(train, patch_positions(20000, 16, 0, False, shape))
    assert not np.array_equal(train[:100], patch_positions(100, 16, 1, False, shape))
    assert set(train[:, 0]) == set(test[:, 0]) == {0, 1}
    tile, held = held_out_tiles(16, shape)
    for corners, in_test in ((train, False), (test, True)):
        first, last = corners[:, 1:] // tile, (corners[:, 1:] + 15) // tile
        assert (first == last).all()  # every patch lies inside one tile …
        assert (held[corners[:, 0], first[:, 0], first[:, 1]] == in_test).all()  # … of its split
    assert held.sum(axis=(1, 2)).tolist() == [12, 12]  # a fifth of each photograph's 6 × 10 tiles
    rows_with_test = np.flatnonzero(held.any(axis=(0, 2)))
    assert len(rows_with_test) >= 3  # scattered, not one strip
    np.testing.assert_array_equal(held, held_out_tiles(16, shape)[1])  # fixed, whatever the seed


def test_patches_through_load_dataset():
    data = load_dataset({"name": "patches", "train_size": 500, "seed": 2}, unit=True)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (450, 50, 1000)
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)):
        assert x.dtype == np.float32 and x.shape[1] == 256 and len(y) == len(x)
        assert np.isfinite(x).all() and 0.0 <= x.min() and x.max() <= 1.0
    assert data.f_train is None and data.f_val is None and data.factor_names == ()
    other = load_dataset({"name": "patches", "train_size": 500, "seed": 3}, unit=True)
    assert not np.array_equal(other.x_test, data.x_test)


def test_both_are_registered_with_their_options():
    assert set(DATASET_OPTIONS["sprites"]) == {"size", "scales", "orientations", "positions", "n_train",
                                               "n_test", "test_fraction", "seed"}
    assert set(DATASET_OPTIONS["patches"]) == {"size", "n_train", "n_test", "colour", "seed"}


@pytest.mark.parametrize("name, options, key", [
    ("sprites", {"size": 48}, "dataset.size"),
    ("sprites", {"size": 32.0}, "dataset.size"),
    ("sprites", {"scales": 0}, "dataset.scales"),
    ("sprites", {"orientations": -1}, "dataset.orientations"),
    ("sprites", {"positions": True}, "dataset.positions"),
    ("sprites", {"test_fraction": 0}, "dataset.test_fraction"),
    ("sprites", {"n_train": 6000, "n_test": 1000}, "dataset.n_train"),
    ("sprites", {"positions": 1000}, "dataset.positions"),
    ("sprites", {"seed": -1}, "dataset.seed"),
    ("patches", {"size": 300}, "dataset.size"),
    ("patches", {"n_train": 0}, "dataset.n_train"),
    ("patches", {"n_train": 10**7}, "dataset.n_train"),
    ("patches", {"colour": "yes"}, "dataset.colour"),
])
def test_bad_options_are_refused_naming_the_key(name, options, key):
    with pytest.raises(UserError, match=re.escape(key)) as err:
        load_dataset({"name": name, **options})
    assert "\n" not in str(err.value)
