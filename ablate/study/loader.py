"""A study's YAML → a validated, frozen `Study`. Every error names the file, the line, the key
and the fix. Torch-free.

Owns: reading the YAML safely (aliases bounded before they expand), line numbers of keys,
`--set KEY=VALUE` overrides, the one generic reader of every schema field, and the order in
which the cross-field rules (rules.py) run. Does not own: the fields (schema.py) or the values'
checks (checks.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ablate.errors import UserError
from ablate.nets.families import default_metric
from ablate.registry import suggest
from ablate.study import checks, rules
from ablate.study.metrics import twin_on_test
from ablate.study.schema import TOP_KEYS, RunConfig, Search, Study, default, read_fields


class Lines:
    """Line numbers of keys in the YAML document, for error messages."""

    def __init__(self, text: str):
        self.lines: dict[str, int] = {}
        try:
            self._walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
        except yaml.YAMLError:
            pass

    def _walk(self, node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                self.lines[path] = key.start_mark.line + 1
                self._walk(value, path)
        elif isinstance(node, yaml.SequenceNode):  # space.dataset[1]
            for i, item in enumerate(node.value):
                self.lines[f"{prefix}[{i}]"] = item.start_mark.line + 1
                self._walk(item, f"{prefix}[{i}]")

    def at(self, path: str) -> str:
        while path and path not in self.lines:
            path = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path)
        return f":{self.lines[path]}" if path in self.lines else ""


class Loader:
    def __init__(self, path: str, text: str, overrides: dict[str, str] | None = None):
        self.path, self.where = path, Lines(text)
        self.overrides = overrides or {}
        """key → the `--set KEY=VALUE` that gave it: an error in it names the override."""

    def fail(self, key: str, message: str) -> UserError:
        prefix = f"{key}: " if key else ""
        given = next((item for k, item in self.overrides.items()
                      if key == k or key.startswith(k + ".") or (key and k.startswith(key + "."))), None)
        if given is not None:
            return UserError(f"{self.path}: --set {given}: {prefix}{message}")
        return UserError(f"{self.path}{self.where.at(key)}: {prefix}{message}")

    def check(self, key: str, value, checker):
        try:
            return checker(value)
        except checks.Bad as exc:
            return self._raise(key, str(exc))

    def _raise(self, key, message):
        raise self.fail(key, message)

    def mapping(self, key: str, value, allowed) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping of keys to values, got {type(value).__name__}")
        for k in value:
            if not isinstance(k, str):
                where = f"{key}.{checks.shown(k)}" if key else checks.shown(k)
                raise self.fail(key, f"has the key {checks.shown(k)}, which is not text; keys are names "
                                     f"such as {', '.join(list(allowed)[:3])}.")
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                hint = suggest(str(k), list(allowed))
                known = ", ".join(allowed)
                raise self.fail(where, f"unknown key '{k}'.{hint} Allowed here: {known}.")
        return value


def load_study(path: str | Path, overrides: tuple[str, ...] = ()) -> Study:
    """Read and validate a study YAML file, with `overrides` (`KEY=VALUE`, as `--set` gives
    them) applied first; raise UserError naming the file (or the override), key and fix."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such study file. Give the path to a study YAML "
                        "(see studies/quick.yaml).") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it as a study YAML ({exc}).") from None
    return parse_study(text, path, overrides)


def parse_study(text: str, path: str = "<study>", overrides: tuple[str, ...] = ()) -> Study:
    """Validate a study's YAML text with `overrides` applied; `path` names it in error
    messages. With overrides, the study's `source` is the YAML they make (what results/<name>/
    study.yaml keeps, so a report rebuilt from it sees the same study)."""
    ld, doc = _document(text, path)
    if overrides:
        doc = override(doc, overrides, path)
        ld.overrides = {item.partition("=")[0].strip(): item for item in overrides}
        shown = (o.encode("unicode_escape").decode() for o in overrides)  # one comment line
        text = (f"# {Path(path).name} with " + " ".join(f"--set '{o}'" for o in shown) + "\n"
                + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100))
    ld.mapping("", doc, TOP_KEYS)
    top = read_fields(ld, Study, doc)
    if "name" not in top:
        top["name"] = ld.check("name", Path(path).stem, checks.name)
    top["datasets"] = rules.datasets_section(ld, doc)
    base = read_fields(ld, RunConfig, doc)
    base["dataset"] = next(iter(top["datasets"]))
    search = read_fields(ld, Search, doc)
    strategy = search.get("strategy", default(Search, "strategy"))
    raw_space = doc.get("space") or {}
    axis = isinstance(raw_space, dict) and "dataset" in raw_space
    space, ranges = rules.space_section(ld, {k: v for k, v in raw_space.items() if k != "dataset"}
                                        if axis else raw_space, strategy)
    if axis:  # in the place the YAML gives it (the grid's order)
        space = {k: tuple(top["datasets"]) if k == "dataset" else space[k]
                 for k in raw_space if k in space or k == "dataset"}
    protocol = rules.protocol_section(ld, doc, top, space, strategy) if doc.get("protocol") is not None else None
    top["tracking"] = rules.tracking_section(ld, doc.get("tracking"))

    # Cross-field rules: defaults that follow from other fields.
    activations = space.get("activation", (base.get("activation", default(RunConfig, "activation")),))
    top["baseline"] = rules.baseline(ld, top.get("baseline"), activations)
    families = set(space.get("family", (base.get("family", default(RunConfig, "family")),)))
    search = rules.search_section(ld, doc.get("search") or {}, search, top.get("metric"),
                     default_metric(families), top["datasets"])
    top["metric"] = top.get("metric", twin_on_test(search.objective))
    rules.needs_validation(ld, top["datasets"], axis, search, protocol)
    rules.own_model(ld, base, space, ranges)
    rules.architecture(ld, base, space)
    rules.families_apply(ld, families, space, ranges, top["metric"], search)
    rules.bounded(ld, space, top.get("seeds", default(Study, "seeds")), search, protocol)
    return Study(**top, base=RunConfig(**base), space=space, ranges=ranges, search=search,
                 protocol=protocol, source=text, path=path, overrides=tuple(overrides))


def _override_value(raw: str):
    """A `--set` value read as YAML, with numbers like 1e-3 (a string to YAML 1.1) as floats."""
    def numbers(v):
        if isinstance(v, str) and checks.NUMBER.fullmatch(v.strip()):
            return float(v)
        if isinstance(v, list):
            return [numbers(x) for x in v]
        if isinstance(v, dict):
            return {k: numbers(x) for k, x in v.items()}
        return v
    try:
        return numbers(yaml.safe_load(raw))
    except yaml.YAMLError as exc:
        raise checks.Bad(f"the value is not YAML ({getattr(exc, 'problem', None) or exc})") from None


def override(doc: dict, overrides: tuple[str, ...], path: str) -> dict:
    """The YAML mapping with each `KEY=VALUE` set: KEY a dotted path (train.epochs,
    space.activation, dataset.train_size), VALUE YAML ([relu, gelu], 5, 1e-3). The result is
    validated like any study; this only places the values."""
    import copy

    doc = copy.deepcopy(doc)
    for item in overrides:
        key, eq, raw = item.partition("=")
        parts = key.strip().split(".")
        try:
            if not eq or not all(parts):
                raise checks.Bad("give KEY=VALUE with a dotted key, e.g. --set train.epochs=5 or "
                           "--set 'space.activation=[relu, gelu]'")
            value = _override_value(raw)
            node = doc
            for i, part in enumerate(parts[:-1]):
                child = node.get(part)
                if part == "dataset" and i == 0 and isinstance(child, str):
                    child = {"name": child}  # dataset: digits, with an option set
                if child is None:
                    child = {}
                if not isinstance(child, dict):
                    raise checks.Bad(f"{'.'.join(parts[:i + 1])} is {child!r}, not a mapping to set "
                               f"'{parts[i + 1]}' in")
                node[part] = child
                node = child
            node[parts[-1]] = value
        except checks.Bad as exc:
            raise UserError(f"{path}: --set {item}: {exc}.") from None
    return doc


def _expanded_size(node, path: str) -> int:
    """How many values the YAML node stands for once its aliases are followed (each alias
    counted as often as it is used, as a study's reader would see it), without expanding
    anything; a node that contains itself, or a size past checks.MAX_YAML_NODES, is an error."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(n) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in visiting:
            raise UserError(f"{path}:{n.start_mark.line + 1}: an alias refers to the value that "
                            "contains it, so the study would be infinite; remove that alias.")
        visiting.add(id(n))
        children = ([c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode)
                    else n.value if isinstance(n, yaml.SequenceNode) else [])
        total = 1 + sum(size(c) for c in children)
        visiting.discard(id(n))
        if total > checks.MAX_YAML_NODES:
            raise UserError(f"{path}: its aliases expand to more than {checks.MAX_YAML_NODES:,} values; a "
                            "study is a few dozen. Write the values out, or use fewer aliases.")
        sizes[id(n)] = total
        return total

    return size(node) if node is not None else 0


def _document(text: str, path: str) -> tuple[Loader, dict]:
    """The parsed YAML mapping, or one error naming the line of a syntax error. Aliases are
    bounded before anything is expanded."""
    try:
        _expanded_size(yaml.compose(text, Loader=yaml.SafeLoader), path)
        doc = yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to read as a study; a study is a few levels "
                        "of mappings and lists.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{path}{line}: malformed YAML ({problem}); fix the syntax there.") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a study must be a YAML mapping with keys such as dataset, "
                        f"model, train, space; got {type(doc).__name__}.")
    return Loader(path, text), doc
