"""A generic name → factory registry with "did you mean" errors and import-path plugins.

Owns: lookup by name, suggestions, importing `package.module:attr` paths (a user's plugin, or
an entry's lazily imported function). Does not own: what the entries are (activations.py and
data.py register into it).
"""

from __future__ import annotations

import difflib
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

from ablate.errors import UserError

T = TypeVar("T")


def suggest(name: str, known: list[str]) -> str:
    """' Did you mean 'x'?' for the closest known name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def import_object(path: str) -> object:
    """Import `package.module:attr` (pkgutil.resolve_name); a user error when the module or
    attribute is missing."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UserError(f"'{path}' is not an import path; write it as package.module:Factory.")
    try:
        return pkgutil.resolve_name(path)
    except ImportError as exc:
        raise UserError(f"cannot import module '{module_name}' for '{path}' ({exc}); "
                        "check the spelling and that it is on PYTHONPATH.") from None
    except AttributeError:
        raise UserError(f"module '{module_name}' has no attribute '{attr}' (from '{path}').") from None
    except Exception as exc:  # a user's module that fails while importing: its error, one line
        raise UserError(f"importing '{path}' raised {type(exc).__name__}: {str(exc)[:200]}; fix "
                        "that module.") from None


class Registry(Generic[T]):
    """Names of one kind of thing (activations, datasets) mapped to their entries."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str, plugin: Callable[[str], T] | None = None) -> T:
        """The entry for `name`; a `package.module:attr` name goes through `plugin` when given."""
        if name in self._entries:
            return self._entries[name]
        if plugin is not None and ":" in name:
            return plugin(name)
        known = ", ".join(self.names())
        raise UserError(f"unknown {self.kind} '{name}'.{suggest(name, self.names())} Known: {known}.")
