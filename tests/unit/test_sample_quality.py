"""The dataset's classifier and every member's sample quality, in training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ablate.data.datasets import load_dataset
from ablate.study.schema import RunConfig
from ablate.training.classifier import judge_for
from ablate.training.fleet import Member
from ablate.training.loop import train_cohort
from ablate.training.splits import DeviceData

QUALITY = ("fid", "kid", "precision", "recall", "class_coverage", "val_fid", "val_class_coverage")


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    data = load_dataset({"name": "digits", "train_size": 300, "test_size": 80})
    path = tmp_path_factory.mktemp("judge") / "classifier.pt"
    judge = judge_for(data, path, torch.device("cpu"))
    return data, path, judge


def test_the_classifier_is_trained_once_and_cached(judged):
    data, path, judge = judged
    assert path.is_file() and judge.classes == 10 and judge.accuracy > 0.6
    again = judge_for(data, path, torch.device("cpu"))
    assert again.accuracy == judge.accuracy
    x = torch.as_tensor(data.x_test[:5])
    np.testing.assert_array_equal(again.features(x), judge.features(x))
    other = load_dataset({"name": "digits", "train_size": 200, "test_size": 80})
    retrained = judge_for(other, path, torch.device("cpu"))  # other data: not the cached one
    assert not np.array_equal(retrained.features(x), judge.features(x))
    unlabelled = replace(load_dataset({"name": "synthetic"}), y_train=None)
    assert judge_for(unlabelled, path.parent / "none.pt", torch.device("cpu")) is None


def test_sample_quality_is_per_member_and_independent_of_the_cohort(judged):
    data, _, judge = judged
    dev = DeviceData.put(data, torch.device("cpu"), judge)
    cfg = RunConfig(hidden=(32,), epochs=2, batch_size=64, latent_dim=4)
    target = Member("t", cfg, 1)
    others = [Member("o1", RunConfig(hidden=(48,), epochs=2, batch_size=64, latent_dim=2, activation="tanh"), 0),
              Member("o2", RunConfig(hidden=(32,), epochs=2, batch_size=64, latent_dim=8, activation="gelu"), 2)]
    alone = train_cohort([target], dev, iwae_samples=2)["t"].metrics
    crowd = train_cohort(others + [target], dev, iwae_samples=2)
    for m in QUALITY:
        assert np.isfinite(alone[m]), m
        assert crowd["t"].metrics[m] == pytest.approx(alone[m], rel=1e-3, abs=1e-4), m
    assert 0 < alone["class_coverage"] <= 1 and 0 <= alone["precision"] <= 1
    ae = train_cohort([Member("a", RunConfig(hidden=(32,), epochs=1, batch_size=64, family="ae"), 0)],
                      dev, iwae_samples=2)["a"].metrics
    assert "fid" not in ae  # an autoencoder has no prior to sample
