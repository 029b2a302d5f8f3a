"""Where ablate writes files: a reader (a person, another worker) never sees half a file, and a
path that cannot be written is refused before anything is.

Owns: `atomic_open`, the one way ablate writes a file others may read, and `writable_folder` /
`writable_file`, the checks that a folder or file the user named can be made there (no file
in the way, a writable parent, names the file system allows). Does not own: what is written
(tables, figures, reports, image arrays).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ablate.errors import UserError


@contextmanager
def atomic_open(path: Path, mode: str = "w"):
    """Open a temporary file beside `path`; on success it replaces `path` (mode 0644), on an
    error it is removed and `path` is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def writable_folder(path: Path, option: str) -> None:
    """Refuse, with one line naming `option` (the argument that gave the path) and the fix, a
    folder that cannot be made or written into; nothing is created."""
    path = Path(path)
    if os.path.lexists(path):
        _writable_in(path, path, option)
    else:
        _makeable(path, option)


def writable_file(path: Path, option: str, example: str) -> None:
    """Refuse, the same way, a file that cannot be written: a folder of that name (the message
    suggests `example` in it), or a file whose folder cannot be made or written into."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {_short(path)}: is a folder; give a file name, e.g. "
                        f"{_short(path / example)}.")
    if os.path.lexists(path):
        _writable_in(path.parent, path, option)
    else:
        _makeable(path, option)


def _makeable(path: Path, option: str) -> None:
    """A path that does not exist yet can be made: the nearest existing one above it is a
    folder this user may write in, and no name or the whole path is too long for the file
    system (os.path.lexists, unlike Path.exists, answers False for a name too long)."""
    missing, here = [], path
    while not os.path.lexists(here) and here != here.parent:
        missing.append(os.fsencode(here.name))
        here = here.parent
    _writable_in(here, path, option)
    longest, whole = os.pathconf(here, "PC_NAME_MAX"), os.pathconf(here, "PC_PATH_MAX")
    name = next((n for n in missing if len(n) > longest), None)
    if name is not None:
        raise UserError(f"{option} {_short(path)}: the name '{_short(os.fsdecode(name))}' is "
                        f"{len(name)} bytes long, more than the {longest} the file system allows; "
                        "give a shorter one.")
    if len(os.fsencode(os.path.abspath(path))) >= whole:
        raise UserError(f"{option} {_short(path)}: the path is longer than the {whole} bytes the "
                        "file system allows; give a shorter one.")


def _short(text, limit: int = 120) -> str:
    """A path fit for a one-line message: its head and its tail (where the names are)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:40]}…{text[41 - limit:]}"


def _writable_in(folder: Path, path: Path, option: str) -> None:
    if not folder.is_dir():
        raise UserError(f"{option} {_short(path)}: {_short(folder)} is a file where a folder is "
                        "needed; give another path (a folder that does not exist yet is made).")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{option} {_short(path)}: this user may not write in {_short(folder)}; "
                        "give a folder you may write in.")
