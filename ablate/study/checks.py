"""Value checkers of a study's YAML, and the bounds a study must stay within.

Owns: each kind of value a YAML field may hold — whole numbers, numbers, text, choices, layer
widths, channels, devices, activations, fractions, image shapes, seeds, names — each a function
that returns the normalised value or raises `Bad` with a sentence the loader prefixes with the
file, line and key; and the bounds known when a study is read (beyond them a study cannot
finish or cannot fit, and is refused before anything is written; what fits the device's memory
is checked once the data is loaded: machine.cohort_capacity). Torch-free.
"""

from __future__ import annotations

import json
import re

from ablate.errors import UserError
from ablate.nets.activations import check_activation
from ablate.registry import suggest

# Bounds known when a study is read: beyond them a study cannot finish or cannot fit, and is
# refused before anything is written (what fits the device's memory is checked once the data
# is loaded: machine.cohort_capacity).
MAX_SEEDS = 10_000
SEED_MAX = 2**63 - 1
"""Seeds are mixed with other numbers as 64-bit integers: two seeds that differ by 2⁶⁴ would
be the same run, so a seed must fit in 63 bits."""
MAX_EPOCHS = 100_000
MAX_WIDTH = 65_536
"""A hidden layer's width, a conv layer's channels, a latent size."""
MAX_IWAE = 100_000
MAX_MEMBERS = 1_000_000
"""Members (configurations × seeds) in one study."""
MAX_NAME_BYTES = 200
MAX_YAML_NODES = 100_000
"""Values a study's YAML may expand to once its aliases are followed ("billion laughs")."""
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
"""A number as text (1e-3 too, which YAML 1.1 reads as a string)."""


# ---------------------------------------------------------------------------------------------
# Value checkers: each returns the normalised value or raises Bad with a sentence.

class Bad(Exception):
    pass


def shown(v, limit: int = 60) -> str:
    """A value as a message quotes it: its repr, cut to its first characters."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def not_a_number(v) -> str:
    """'got …', and for text YAML 1.1 would not read as a number (1e-4), how to write it."""
    if isinstance(v, str) and NUMBER.fullmatch(v.strip()):
        mantissa, _, exponent = v.strip().lower().partition("e")
        fixed = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
        return (f"got the text {shown(v)}: YAML 1.1 reads a number with an exponent but no "
                f"decimal point as text; write {fixed}")
    return f"got {shown(v)}"


def whole(lo: int | None = None, hi: int | None = None, why: str = ""):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise Bad(f"must be a whole number, {not_a_number(v)}")
        if lo is not None and v < lo:
            raise Bad(f"must be at least {lo}, got {shown(v)}")
        if hi is not None and v > hi:
            raise Bad(f"must be at most {hi:,}{why}, got {shown(v)}")
        return v
    return check


def number(lo: float | None = None, positive: bool = False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise Bad(f"must be a number, {not_a_number(v)}")
        try:
            v = float(v)
        except OverflowError:
            raise Bad(f"is too large to be a number, got {shown(v)}") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise Bad(f"must be a finite number, got {v}")
        if positive and v <= 0:
            raise Bad(f"must be greater than 0, got {v:g}")
        if lo is not None and v < lo:
            raise Bad(f"must be at least {lo:g}, got {v:g}")
        return v
    return check


def string(v):
    if not isinstance(v, str) or not v:
        raise Bad(f"must be a non-empty string, got {shown(v)}")
    return v


def text(v):
    """Free text (a description): a string, possibly empty."""
    if not isinstance(v, str):
        raise Bad(f"must be text, got {type(v).__name__} {shown(v)}")
    return v


def boolean(v):
    if not isinstance(v, bool):
        raise Bad(f"must be true or false, got {shown(v)}")
    return v


def choice(*options):
    def check(v):
        if v not in options:
            hint = suggest(str(v), list(options))
            raise Bad(f"must be one of {', '.join(options)}, got {shown(v)}.{hint}".rstrip("."))
        return v
    return check




def hidden(v):
    if not isinstance(v, list):
        raise Bad(f"must be a list of layer widths such as [256] ([] for none: arch conv), got {shown(v)}")
    return tuple(whole(1, MAX_WIDTH)(w) for w in v)


def channels(v):
    if not isinstance(v, list) or not v:
        raise Bad(f"must be a non-empty list of channel counts such as [32, 64], got {shown(v)}")
    return tuple(whole(1, MAX_WIDTH)(c) for c in v)


def device(v):
    v = string(v)
    if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
        return v
    raise Bad(f"must be auto, cpu, cuda or cuda:N, got {shown(v)}")



def activation(v):
    name = string(v)
    try:
        check_activation(name)
    except UserError as exc:
        raise Bad(str(exc)) from None
    return name


IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


def module_path(v):
    """`package.module:factory` — checked as written; the module is imported only to train."""
    v = string(v)
    if not IMPORT_PATH.fullmatch(v):
        raise Bad(f"must be an import path package.module:factory (a function or class on "
                  f"PYTHONPATH, e.g. examples.resnet_vae:make_vae), got {shown(v)}")
    return v


def options(v):
    """Keyword arguments for a model.module's factory: a mapping of names to numbers, text,
    true/false or lists of them, kept as canonical JSON (equal options, equal text)."""
    if not isinstance(v, dict):
        raise Bad(f"must be a mapping of the factory's keyword arguments, e.g. {{width: 64}}, got {shown(v)}")
    for k, value in v.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise Bad(f"has the key {shown(k)}; keys are the factory's keyword arguments (Python names)")
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(i, (str, int, float, bool)) and i == i for i in items):
            raise Bad(f"{k}: must be a number, text, true/false or a list of them, got {shown(value)}")
    return json.dumps(v, sort_keys=True, separators=(", ", ": "))


def auto(check):
    """`auto` (None: chosen at run time) or a value `check` accepts."""
    return lambda v: None if v == "auto" else check(v)


def fraction(v):
    """A share in [0, 1)."""
    v = number(lo=0.0)(v)
    if v >= 1.0:
        raise Bad(f"must be a fraction in [0, 1), got {v:g}")
    return v


def shape(v):
    """An image shape [C, H, W]."""
    if not isinstance(v, list) or len(v) != 3:
        raise Bad(f"must be an image shape [C, H, W] such as [3, 32, 32], got {v!r}")
    return tuple(whole(1)(d) for d in v)


def seeds(v):
    """A count (3 → seeds 0, 1, 2) or an explicit list of distinct seeds."""
    if not isinstance(v, list):
        return tuple(range(whole(1, MAX_SEEDS, " (each seed is a whole training run)")(v)))
    if not v:
        raise Bad("is an empty list; give a count such as 3 or a list of seeds")
    if len(v) > MAX_SEEDS:
        raise Bad(f"lists {len(v):,} seeds; at most {MAX_SEEDS:,} (each is a whole training run)")
    seeds = tuple(whole(0, SEED_MAX, " (seeds are mixed as 63-bit numbers)")(s) for s in v)
    if len(set(seeds)) != len(seeds):
        raise Bad("lists a seed twice; seeds are repeats and must be distinct")
    return seeds


def name(v):
    v = string(v)
    if "/" in v or "\\" in v or v.startswith(".") or any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise Bad(f"{shown(v)} names a results folder; use letters, digits, - and _.")
    if len(v.encode()) > MAX_NAME_BYTES:
        raise Bad(f"is {len(v.encode())} bytes long; a results folder's name may have at most "
                   f"{MAX_NAME_BYTES}")
    return v
