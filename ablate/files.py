"""Atomic file writes: a reader (a person, another worker) never sees half a file.

Owns: `atomic_open`, the one way ablate writes a file others may read. Does not own: what is
written (tables, figures, reports, image arrays).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


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
