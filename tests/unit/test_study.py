"""Study YAML validation: every bad input names file, line, key and the fix."""

from __future__ import annotations

import pytest

from ablate.errors import UserError
from ablate.study import RunConfig, load_study, parse_study

GOOD = """\
name: t
dataset: {name: digits, train_size: 100}
model: {hidden: [32]}
train: {epochs: 2}
seeds: 2
space:
  activation: [relu, tanh]
  latent_dim: [2, 4]
  kl_weight: [1.0]
"""


def test_good_study_resolves_grid_and_defaults():
    s = parse_study(GOOD, "s.yaml")
    assert s.name == "t" and s.seeds == (0, 1)
    assert len(s.points()) == 4
    cfg = s.config(s.points()[0])
    assert cfg == RunConfig(activation="relu", latent_dim=2, kl_weight=1.0, hidden=(32,), epochs=2)
    assert s.metric == "test_nll" and s.baseline == "relu"


def test_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "my_study.yaml"
    path.write_text(GOOD.replace("name: t\n", ""))
    assert load_study(path).name == "my_study"


def test_fingerprint_ignores_cosmetics_but_not_settings():
    a = parse_study(GOOD, "s.yaml")
    b = parse_study(GOOD.replace("name: t", "name: t\ndescription: other"), "s.yaml")
    c = parse_study(GOOD.replace("epochs: 2", "epochs: 3"), "s.yaml")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_dotted_space_keys_and_hidden_axis():
    text = GOOD.replace("  kl_weight: [1.0]", "  train.lr: [0.001, 0.002]\n  model.hidden: [[16], [32]]")
    s = parse_study(text, "s.yaml")
    assert s.space["lr"] == (0.001, 0.002) and s.space["hidden"] == ((16,), (32,))


BAD = [
    ("space: [unclosed", r"s\.yaml:1: malformed YAML"),
    ("- a list", r"s\.yaml: a study must be a YAML mapping"),
    (GOOD.replace("seeds: 2", "sedes: 2"), r"s\.yaml:5: sedes: unknown key 'sedes'\. Did you mean 'seeds'\?"),
    (GOOD.replace("train: {epochs: 2}", "train: {epochs: two}"), r"s\.yaml:4: train\.epochs: must be a whole number, got 'two'"),
    (GOOD.replace("kl_weight: [1.0]", "kl_weight: []"), r"s\.yaml:9: space\.kl_weight: is an empty list"),
    (GOOD.replace("[relu, tanh]", "[relu, tanhh]"), r"s\.yaml:7: space\.activation: unknown activation 'tanhh'\. Did you mean 'tanh'\? Known: .*relu"),
    (GOOD.replace("name: digits", "name: digitz"), r"s\.yaml:2: dataset\.name: unknown dataset 'digitz'\. Did you mean 'digits'\? Known: digits, .*mnist"),
    (GOOD.replace("train_size: 100", "root: /x"), r"dataset\.root: unknown key 'root'"),
    (GOOD.replace("latent_dim: [2, 4]", "latent_dim: 4"), r"space\.latent_dim: must be a list"),
    (GOOD.replace("latent_dim: [2, 4]", "latent_dim: [0]"), r"space\.latent_dim: must be at least 1"),
    (GOOD.replace("latent_dim: [2, 4]", "dropout: [0.1]"), r"space\.dropout: unknown key 'dropout'"),
    (GOOD.replace("model: {hidden: [32]}", "model: {hidden: 32}"), r"model\.hidden: must be a non-empty list"),
    (GOOD + "device: gpu\n", r"device: must be auto, cpu, cuda or cuda:N"),
    (GOOD + "report: {baseline: gelu}\n", r"report\.baseline: 'gelu' is not among"),
    (GOOD + "report: {metric: accuracy}\n", r"report\.metric: must be one of"),
    (GOOD.replace("seeds: 2", "seeds: [1, 1]"), r"seeds: lists a seed twice"),
]


@pytest.mark.parametrize("text,pattern", BAD, ids=[p[:30] for _, p in BAD])
def test_bad_input_message(text, pattern):
    with pytest.raises(UserError, match=pattern):
        parse_study(text, "s.yaml")


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.yaml: no such study file"):
        load_study(tmp_path / "nope.yaml")
