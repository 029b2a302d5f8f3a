"""Study YAML validation: every bad input names file, line, key and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ablate.errors import UserError
from ablate.study.loader import load_study, parse_study
from ablate.study.schema import AXES, TOP_KEYS, Range, RunConfig, Search, Study, default
from ablate.study.storage import redact, storage_option

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

AXIS = GOOD.replace("dataset: {name: digits, train_size: 100}\n", "")


def test_dataset_axis_labels_each_dataset_and_keys_cohorts_by_it():
    s = parse_study(AXIS + "  dataset: [digits, {name: sprites, size: 64, label: big}, patches]\n", "s.yaml")
    assert s.space["dataset"] == ("digits", "big", "patches") and s.base.dataset == "digits"
    assert s.datasets["big"] == {"name": "sprites", "size": 64, "label": "big"}
    assert len(s.points()) == 2 * 2 * 3
    assert len({s.config(p).cohort_key for p in s.points()}) == 3  # one cohort key per dataset
    one = parse_study(GOOD, "s.yaml")
    assert one.datasets == {"digits": {"name": "digits", "train_size": 100}} and "dataset" not in one.space
    assert one.settings_record()["dataset"] == {"name": "digits", "train_size": 100}  # as before the axis


def test_good_study_resolves_grid_and_defaults():
    s = parse_study(GOOD, "s.yaml")
    assert s.name == "t" and s.seeds == (0, 1)
    assert len(s.points()) == 4
    cfg = s.config(s.points()[0])
    assert cfg == RunConfig(activation="relu", latent_dim=2, kl_weight=1.0, hidden=(32,), epochs=2)
    assert s.metric == "test_nll" and s.baseline == "relu"


def test_report_rope_overrides_the_metric_tables_default():
    assert parse_study(GOOD + "report: {rope: 0.25}\n", "s.yaml").rope == 0.25
    assert parse_study(GOOD, "s.yaml").rope is None  # auto: metrics.Metric.rope of report.metric


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
    (GOOD.replace("[relu, tanh]", "[relu, maxout:9]"), r"s\.yaml:7: space\.activation: activation 'maxout:9': maxout takes a whole number of pieces from 2 to 8"),
    (GOOD.replace("[relu, tanh]", "[relu, maxout:two]"), r"s\.yaml:7: space\.activation: .*whole number of pieces"),
    (GOOD.replace("name: digits", "name: digitz"), r"s\.yaml:2: dataset\.name: unknown dataset 'digitz'\. Did you mean 'digits'\? Known: .*digits, .*mnist"),
    (GOOD.replace("train_size: 100", "root: /x"), r"dataset\.root: unknown key 'root'"),
    (GOOD.replace("latent_dim: [2, 4]", "latent_dim: 4"), r"space\.latent_dim: must be a list"),
    (GOOD.replace("latent_dim: [2, 4]", "latent_dim: [0]"), r"space\.latent_dim: must be at least 1"),
    (GOOD.replace("latent_dim: [2, 4]", "momentum: [0.1]"), r"space\.momentum: unknown key 'momentum'"),
    (GOOD.replace("model: {hidden: [32]}", "model: {hidden: 32}"), r"model\.hidden: must be a list of layer widths"),
    (GOOD.replace("model: {hidden: [32]}", "model: {hidden: []}"), r"s\.yaml:3: model\.hidden: is \[\], which leaves an mlp without a hidden layer"),
    (GOOD.replace("model: {hidden: [32]}", "model: {hidden: [32], channels: [8]}"), r"model\.channels: gives the channels of convolutions, which arch mlp does not have"),
    (GOOD.replace("model: {hidden: [32]}", "model: {arch: conv, channels: []}"), r"model\.channels: must be a non-empty list of channel counts"),
    (GOOD.replace("model: {hidden: [32]}", "model: {arch: cnn}"), r"model\.arch: must be one of mlp, conv, got 'cnn'"),
    (GOOD + "device: gpu\n", r"device: must be auto, cpu, cuda or cuda:N"),
    (GOOD + "report: {baseline: gelu}\n", r"report\.baseline: 'gelu' is not among"),
    (GOOD + "report: {metric: accuracy}\n", r"report\.metric: must be one of"),
    (GOOD + "report: {rope: -0.1}\n", r"report\.rope: must be at least 0, got -0\.1"),
    (GOOD.replace("seeds: 2", "seeds: [1, 1]"), r"seeds: lists a seed twice"),
    (GOOD + "  dataset: [digits]\n", r"s\.yaml:2: dataset: and space\.dataset both say what data"),
    (AXIS + "  dataset: [digits, {name: sprite}]\n", r"s\.yaml:9: space\.dataset\[1\]\.name: unknown dataset 'sprite'\. Did you mean 'sprites'\?"),
    (AXIS + "  dataset: [digits, {name: digits, size: 2}]\n", r"space\.dataset\[1\]\.size: unknown key 'size'"),
    (AXIS + "  dataset: [sprites, sprites]\n", r"space\.dataset\[1\]: is a second dataset called 'sprites'; give each a distinct label"),
    (AXIS + "  dataset: [digits, {name: sprites, label: a/b}]\n", r"space\.dataset\[1\]\.label: "),
    (AXIS + "  dataset: digits\n", r"space\.dataset: must be a list of datasets"),
    ("search: {strategy: tpe, n_trials: 4}\nspace:\n  dataset: [digits, sprites]\n",
     r"s\.yaml:3: space\.dataset: lists datasets, but search\.strategy tpe would compare"),
    (AXIS + "  dataset: [digits, {name: sprites, seed: -1}]\n", r"space\.dataset\[1\]\.seed: must be at least 0"),
    (AXIS + "  dataset: [digits, {name: patches, val_fraction: 0}]\nprotocol: {tune: {train.lr: [0.001, 0.01]}}\n",
     r"space\.dataset\[1\]\.val_fraction: is 0, but the tuned protocol chooses"),
]


@pytest.mark.parametrize("text,pattern", BAD, ids=[p[:30] for _, p in BAD])
def test_bad_input_message(text, pattern):
    with pytest.raises(UserError, match=pattern):
        parse_study(text, "s.yaml")


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.yaml: no such study file"):
        load_study(tmp_path / "nope.yaml")


SEARCH = """\
name: s
dataset: {name: digits, train_size: 100}
model: {hidden: [32]}
train: {epochs: 8}
seeds: 2
search: {strategy: tpe, n_trials: 12, pruner: median}
space:
  activation: [relu, tanh]
  latent_dim: {low: 2, high: 16, log: true}
  train.lr: {low: 1.0e-4, high: 3.0e-3, log: true}
  kl_weight: [0.5, 1.0]
"""


def test_search_section_ranges_and_inferred_direction():
    s = parse_study(SEARCH, "s.yaml")
    assert s.search.strategy == "tpe" and s.search.n_trials == 12 and s.search.pruner == "median"
    assert s.search.objective == "val_nll" and s.search.direction == "minimize"
    assert s.ranges["latent_dim"] == Range(2.0, 16.0, log=True, integer=True)
    assert s.ranges["lr"] == Range(1e-4, 3e-3, log=True, integer=False)
    assert s.space == {"activation": ("relu", "tanh"), "kl_weight": (0.5, 1.0)}
    assert s.corners() == [{"activation": a, "kl_weight": k, "latent_dim": 16, "lr": 3e-3}
                           for a in ("relu", "tanh") for k in (0.5, 1.0)]
    assert s.params({"latent_dim": 7.0, "lr": 0.001}) == {"latent_dim": 7, "lr": 0.001}
    maxi = parse_study(SEARCH.replace("pruner: median", "objective: val_probe_accuracy"), "s.yaml")
    assert maxi.search.direction == "maximize" and maxi.metric == "probe_accuracy"
    override = parse_study(SEARCH.replace("pruner: median", "direction: maximize"), "s.yaml")
    assert override.search.direction == "maximize"


def test_search_fingerprint_ignores_budget_but_not_space():
    a = parse_study(SEARCH, "s.yaml")
    more = parse_study(SEARCH.replace("n_trials: 12", "n_trials: 40"), "s.yaml")
    wider = parse_study(SEARCH.replace("high: 16", "high: 32"), "s.yaml")
    assert a.fingerprint() == more.fingerprint() != wider.fingerprint()
    grid = parse_study(GOOD, "s.yaml")
    assert grid.fingerprint() == parse_study(GOOD + "search: {strategy: grid}\n", "s.yaml").fingerprint()


SEARCH_BAD = [
    (SEARCH.replace("strategy: tpe, n_trials: 12, ", ""), r"s\.yaml:9: space\.latent_dim: is a range, which a grid cannot enumerate"),
    (SEARCH.replace("strategy: tpe", "strategy: optuna"), r"search\.strategy: must be one of grid, tpe, random, cmaes, qmc, got 'optuna'"),
    (SEARCH.replace("pruner: median", "pruner: asha"), r"search\.pruner: must be one of none, median, hyperband, wilcoxon"),
    (SEARCH.replace("pruner: median", "objective: test_nlll"), r"search\.objective: must be one of .*Did you mean 'test_nll'\?"),
    (SEARCH.replace("n_trials: 12, ", ""), r"s\.yaml:6: search: strategy tpe needs n_trials"),
    (SEARCH.replace("n_trials: 12", "n_trials: 0"), r"search\.n_trials: must be at least 1"),
    (SEARCH.replace("pruner: median", "pruner: median, objective: val_probe_accuracy"),
     r"search\.pruner: pruning needs an objective measured after every epoch"),
    (SEARCH.replace("high: 16", "high: 1"), r"space\.latent_dim: low \(2\) must be less than high \(1\)"),
    (SEARCH.replace("low: 2, high: 16", "low: 2"), r"space\.latent_dim: a range needs low and high"),
    (SEARCH.replace("log: true}\n  train", "logg: true}\n  train"), r"space\.latent_dim\.logg: unknown key 'logg'"),
    (SEARCH.replace("[relu, tanh]", "{low: 1, high: 2}"), r"space\.activation: 'activation' is categorical"),
    (SEARCH.replace("low: 1.0e-4", "low: 0"), r"space\.train\.lr\.low: must be greater than 0"),
    (SEARCH + "storage: redis://h/0\n", r"storage: 'redis' databases are not supported"),
    (SEARCH + "storage: 42\n", r"storage: must be sqlite or a database URL"),
]


@pytest.mark.parametrize("text,pattern", SEARCH_BAD, ids=[p[:40] for _, p in SEARCH_BAD])
def test_bad_search_input_message(text, pattern):
    with pytest.raises(UserError, match=pattern):
        parse_study(text, "s.yaml")


def test_storage_urls_are_redacted_and_checked():
    assert redact("postgresql://me:hunter2@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact("postgresql://db/x?user=me&password=hunter2") == "postgresql://db/x?user=me&password=***"
    assert redact("postgresql://me@db/x") == "postgresql://me@db/x"
    assert parse_study(SEARCH + "storage: postgresql://me@db:5432/x\n", "s.yaml").storage.startswith("postgresql://")
    with pytest.raises(UserError, match=r"--storage: 'mysql' databases are not supported"):
        storage_option("mysql://me:hunter2@db/x")
    with pytest.raises(UserError) as info:
        storage_option("mysql://me:hunter2@db/x")
    assert "hunter2" not in str(info.value)


def test_importing_the_study_parser_and_the_analysis_side_imports_no_torch():
    code = ("import sys, ablate.study.loader, ablate.cli, ablate.analysis.report, ablate.analysis.compare; "
            "ablate.study.loader.load_study('studies/quick.yaml'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_schema_is_one_definition_per_field():
    """Every YAML field's default is the dataclass's own; the parser fills in nothing else."""
    s = parse_study("name: bare\n", "s.yaml")
    assert s.base == RunConfig() and s.search == Search()
    assert s.seeds == default(Study, "seeds") and s.iwae_samples == default(Study, "iwae_samples")
    assert s.device == default(Study, "device") and s.storage == default(Study, "storage")
    assert {*AXES, "dataset"} == set(RunConfig.__dataclass_fields__)  # space.dataset lists datasets
    assert {k for k, f in AXES.items() if f.metadata["range"]} == {
        "latent_dim", "kl_weight", "epochs", "batch_size", "lr", "kl_warmup_epochs", "noise",
        "sparsity", "contraction", "dropout"}
    with pytest.raises(UserError, match=r"model\.lr: unknown key 'lr'\. Allowed here: activation, "
                                        r"decoder_activation, latent_dim, family, noise, sparsity, "
                                        r"contraction, dropout, arch, channels, hidden, likelihood, init, "
                                        r"module, options\."):
        parse_study("model: {lr: 0.1}\n", "s.yaml")
    assert {"model", "train", "eval", "report", "search", "space", "seeds"} <= set(TOP_KEYS)


PROTOCOL = GOOD.replace("seeds: 2\n", "") + """\
protocol:
  tune:
    train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
    model.init: [auto, default]
  budget: 6
  final_seeds: 3
"""


def test_protocol_parses_tuned_keys_budget_and_final_seeds():
    s = parse_study(PROTOCOL, "s.yaml")
    assert s.protocol.space == {"init": ("auto", "default")}
    assert s.protocol.ranges == {"lr": Range(1e-4, 1e-2, log=True, integer=False)}
    assert s.protocol.budget == 6 and s.seeds == (0, 1, 2) and s.search.is_grid
    assert s.search.objective == "val_nll" and s.metric == "test_nll"
    assert s.fingerprint() != parse_study(PROTOCOL.replace("budget: 6", "budget: 7"), "s.yaml").fingerprint()
    assert s.corners()[0]["lr"] == 1e-2  # cohorts are sized for the largest tuned value


PROTOCOL_BAD = [
    (PROTOCOL.replace("  budget: 6\n", "  budget: 6\n  budgett: 2\n"), r"protocol\.budgett: unknown key 'budgett'"),
    (PROTOCOL.replace("budget: 6", "budget: 0"), r"protocol\.budget: must be at least 1"),
    (PROTOCOL.replace("model.init", "activation"), r"protocol\.tune\.activation: 'activation' is compared"),
    (PROTOCOL.replace("final_seeds: 3", "final_seeds: [1000003]"), r"protocol\.final_seeds: 1000003 is the tuning seed"),
    (PROTOCOL + "seeds: 2\n", r"protocol\.final_seeds: and seeds both give the final seeds"),
    (PROTOCOL.replace("dataset: {name: digits, train_size: 100}", "dataset: {name: digits, val_fraction: 0}"),
     r"dataset\.val_fraction: is 0, but the tuned protocol chooses by the validation split"),
    (PROTOCOL + "report: {metric: active_units}\nsearch: {objective: test_recon}\n",
     r"search\.objective: test_recon is measured on the test split.*validation twin, val_recon"),
]


@pytest.mark.parametrize("text,pattern", PROTOCOL_BAD, ids=[p[:40] for _, p in PROTOCOL_BAD])
def test_bad_protocol_input_message(text, pattern):
    with pytest.raises(UserError, match=pattern):
        parse_study(text, "s.yaml")


def test_objective_defaults_to_the_validation_twin_of_the_report_metric():
    s = parse_study(GOOD + "report: {metric: probe_accuracy}\n", "s.yaml")
    assert s.search.objective == "val_probe_accuracy" and s.search.direction == "maximize"
    s = parse_study(GOOD + "search: {objective: val_recon}\n", "s.yaml")
    assert s.metric == "test_recon"  # the report ranks by the objective's test twin
    s = parse_study(GOOD.replace("train_size: 100", "train_size: 100, val_fraction: 0"), "s.yaml")
    assert s.search.objective == "test_nll"  # a grid without validation chooses nothing


def test_axes_that_do_not_apply_to_a_family_do_not_multiply_its_members():
    s = parse_study("space: {family: [vae, ae, dae], kl_weight: [0.5, 1.0], noise: [0.1, 0.5], "
                    "activation: [relu, tanh]}", "s.yaml")
    points = s.points()
    assert len(points) == 2 * 2 + 2 + 2 * 2  # activations × (vae × kl, ae, dae × noise)
    assert {"family": "ae", "activation": "relu"} in points
    assert all("noise" not in p for p in points if p["family"] != "dae")
    # a sampler's kl_weight for an ae is not part of its parameters
    assert s.params({"family": "ae", "kl_weight": 3.0, "activation": "relu"}) == {"family": "ae", "activation": "relu"}


def test_a_users_module_reads_its_options_not_the_built_in_models_settings():
    own = RunConfig(module="pkg.models:make", options='{"width": 8}')
    assert not own.applies("hidden") and not own.applies("init") and own.applies("options")
    assert not RunConfig().applies("options") and RunConfig().applies("hidden")
    assert own.cohort_key != RunConfig().cohort_key
    assert own.cohort_key == RunConfig(module="pkg.models:make", options='{"width": 16}', hidden=(3,)).cohort_key
    s = parse_study("model: {module: 'pkg.models:make', options: {width: 8, acts: [a, b]}}\n", "s.yaml")
    assert s.base.options == '{"acts": ["a", "b"], "width": 8}'  # canonical JSON: equal options, equal text
    # a study without a module keeps the fingerprint it had before modules existed
    assert not {"module", "options"} & set(parse_study("name: bare\n", "s.yaml").settings_record()["base"])
    assert {"module", "options"} <= set(s.settings_record()["base"])


def test_no_setting_shares_its_runs_csv_column_with_a_metric():
    """runs.csv has a column per RunConfig field and per metric: one name, one column."""
    from ablate.study.metrics import METRICS

    assert not set(RunConfig.__dataclass_fields__) & set(METRICS)
