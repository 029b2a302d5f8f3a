"""A hostile and careless user's study files and `--set` overrides: every one is a single line
naming the file (or the override), the key and the fix — a UserError, never another exception —
and a legitimate oddity (a BOM, Unicode) still loads. Then Hypothesis feeds the loader
generated YAML and overrides and finds nothing but user errors."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from ablate.errors import UserError
from ablate.study.loader import parse_study
from ablate.study.schema import TOP_KEYS

OK = "space: {activation: [relu, tanh]}\n"
LAUGHS = ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
          + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef")))

HOSTILE = [
    ("billion laughs", LAUGHS, r"aliases expand to more than 100,000 values"),
    ("recursive alias", "space: &s {activation: [relu], x: *s}\n", r"refers to the value that contains it"),
    ("seed beyond 63 bits", "seeds: [0, 18446744073709551616]\n" + OK, r"seeds: must be at most 9,223,372,036,854,775,807"),
    ("a million seeds", "seeds: 10000000\n" + OK, r"seeds: must be at most 10,000"),
    ("too many seeds listed", "seeds: [" + ", ".join(map(str, range(10_001))) + "]\n" + OK, r"lists 10,001 seeds"),
    ("epochs in the trillions", "train: {epochs: 1000000000000}\n" + OK, r"train\.epochs: must be at most 100,000"),
    ("epochs as 1e12 text", "train: {epochs: 1e12}\n" + OK, r"train\.epochs: must be a whole number, got the text '1e12'"),
    ("a ten-million-unit layer", "model: {hidden: [10000000]}\n" + OK, r"model\.hidden: must be at most 65,536"),
    ("iwae samples 1e9", "eval: {iwae_samples: 1000000000}\n" + OK, r"eval\.iwae_samples: must be at most 100,000"),
    ("a 400-digit lr", "train: {lr: " + "9" * 400 + "}\n" + OK, r"train\.lr: is too large to be a number, got 9{20,}… \(400 characters\)"),
    ("lr low 1e-4 as text", "search: {strategy: tpe, n_trials: 4}\nspace: {activation: [relu], lr: {low: 1e-4, high: 1.0e-2}}\n",
     r"space\.lr\.low: must be a number, got the text '1e-4'.*write 1\.0e-4"),
    ("NUL byte in the name", 'name: "a\\0b"\n' + OK, r"name: 'a\\x00b' names a results folder"),
    ("a name too long", "name: " + "n" * 300 + "\n" + OK, r"name: is 300 bytes long"),
    ("a name with a backslash", 'name: "a\\\\b"\n' + OK, r"names a results folder"),
    ("protocol.tune key not text", OK + "protocol: {tune: {1: [1, 2]}, budget: 2}\n", r"protocol\.tune: has the key 1, which is not text"),
    ("a top-level key not text", "1: 2\n" + OK, r"has the key 1, which is not text"),
    ("description a huge list", "description: [" + ", ".join(["x"] * 5000) + "]\n" + OK, r"description: must be text, got list \['x', .{20,}… \("),
    ("ae with a kl_weight axis", "model: {family: ae}\nspace: {activation: [relu], kl_weight: [1.0, 2.0]}\n", r"space\.kl_weight: applies to vae only"),
    ("vae with a noise axis", "space: {activation: [relu], noise: [0.1, 0.2]}\n", r"space\.noise: applies to dae only"),
    ("gan with a kl_weight axis", "model: {family: gan}\nspace: {activation: [relu], kl_weight: [1.0]}\n", r"space\.kl_weight: applies to vae only"),
    ("gan ranked by test NLL", "model: {family: gan}\n" + OK + "report: {metric: test_nll}\n", r"report\.metric: test_nll is measured for vae only"),
    ("ae ranked by fid", "model: {family: ae}\n" + OK + "report: {metric: fid}\n", r"report\.metric: fid is measured for gan, vae only"),
    ("a search on an objective some family lacks", "search: {strategy: tpe, n_trials: 4, objective: val_nll}\n"
     "space: {family: [vae, ae], activation: [relu]}\n", r"search\.objective: val_nll is measured for vae only"),
    ("a million and a half members", "seeds: 10000\nspace: {activation: [relu, tanh, gelu], latent_dim: [" + ", ".join(map(str, range(1, 51))) + "]}\n",
     r"space: makes 1,500,000 members"),
    ("a bad YAML syntax", "space: {activation: [relu\n", r"malformed YAML"),
    ("not a mapping", "- a\n- b\n", r"a study must be a YAML mapping"),
    ("deep nesting", "a: " + "[" * 5000 + "]" * 5000 + "\n", r"(nested too deeply|malformed YAML|aliases expand)"),
    ("dataset as a number", "dataset: 5\n" + OK, r"dataset: must be a mapping with a name"),
    ("boolean as an int", "train: {epochs: true}\n" + OK, r"train\.epochs: must be a whole number, got True"),
    ("NaN lr", "train: {lr: .nan}\n" + OK, r"train\.lr: must be a finite number"),
]

OVERRIDES = [
    ("an unknown section", ("foo.bar=1",), r"--set foo\.bar=1: foo: unknown key 'foo'"),
    ("an unknown key", ("train.epoch=1",), r"--set train\.epoch=1: train\.epoch: unknown key 'epoch'\. Did you mean 'epochs'\?"),
    ("no equals sign", ("train.epochs",), r"--set train\.epochs: give KEY=VALUE"),
    ("a value that is not YAML", ("space.activation=[relu",), r"--set space\.activation=\[relu: the value is not YAML"),
    ("setting inside a scalar", ("name.x=1",), r"name is 'o', not a mapping"),
    ("a newline in a value", ("description=a\nb: 1",), r"(--set description=a\nb: 1|description)"),
    ("seeds beyond 63 bits", ("seeds=[0, 18446744073709551616]",), r"--set seeds=.*must be at most"),
]


def _one_line_error(text: str, overrides=()) -> str:
    with pytest.raises(UserError) as err:
        parse_study(text, "o.yaml", overrides)
    message = str(err.value)
    assert message.startswith("o.yaml"), message
    assert len(message) < 600, message
    return message


@pytest.mark.parametrize("what,text,pattern", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_study_is_one_user_error(what, text, pattern):
    import re

    message = _one_line_error(text)
    assert "\n" not in message and re.search(pattern, message), message


@pytest.mark.parametrize("what,items,pattern", OVERRIDES, ids=[o[0] for o in OVERRIDES])
def test_a_hostile_override_names_itself(what, items, pattern):
    import re

    message = _one_line_error("name: o\n" + OK, items)
    assert re.search(pattern, message, re.S), message


def test_legitimate_oddities_load():
    s = parse_study("\ufeffname: bom\ndescription: \"Ünïcødé — β, 日本語\"\n" + OK, "s.yaml")
    assert s.name == "bom" and "日本語" in s.description
    s = parse_study("space:\n  activation: &acts [relu, tanh]\n  decoder_activation: *acts\n", "s.yaml")
    assert s.space["decoder_activation"] == ("relu", "tanh")  # an alias within bounds is fine
    s = parse_study("description: a newline set on the command line\n" + OK, "s.yaml", ("description=two\nlines",))
    assert parse_study(s.source, "again.yaml").description == s.description  # study.yaml reads back


# ----------------------------------------------------------------------------- Hypothesis
SCHEMA_KEYS = [*TOP_KEYS, "activation", "latent_dim", "kl_weight", "epochs", "lr", "hidden", "family",
               "low", "high", "log", "name", "strategy", "n_trials", "tune", "budget", "metric", "seeds"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["relu", "tanh", "vae", "gan", "grid", "tpe", "1e-3", "digits", "auto"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(SCHEMA_KEYS), st.integers(), st.text(max_size=6)),
                                                 inner, max_size=4)), max_leaves=12)
documents = st.dictionaries(st.sampled_from(SCHEMA_KEYS), values, max_size=6)


def _only_user_errors(text: str, overrides=()) -> None:
    try:
        parse_study(text, "h.yaml", overrides)
    except UserError:
        pass


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_generated_studies_give_a_study_or_a_user_error(doc):
    _only_user_errors(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(st.sampled_from(SCHEMA_KEYS), min_size=1, max_size=3),
                          st.one_of(st.text(max_size=15), values.map(lambda v: yaml.safe_dump(v).strip()))),
                max_size=3))
def test_generated_overrides_give_a_study_or_a_user_error(items):
    _only_user_errors("name: h\n" + OK, tuple(f"{'.'.join(k)}={v}" for k, v in items))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_arbitrary_text_gives_a_study_or_a_user_error(text):
    _only_user_errors(text)
