"""Storage URLs: where a study's store lives (`storage:` in the YAML, `--storage`).

Owns: the schemes a store may use, the check of a URL, the `--storage` option, and a URL fit
to print (passwords hidden). Torch-free.
"""

from __future__ import annotations

import re

from ablate.errors import UserError
from ablate.study.checks import Bad

STORAGE_SCHEMES = ("sqlite", "postgresql")


def redact(url: str) -> str:
    """A storage URL fit to print: the password of user:password@ (SQLAlchemy's own rendering,
    hide_password) and the value of a ?password= query parameter become ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        shown = make_url(url).render_as_string(hide_password=True) if "@" in url else url
    except ArgumentError:  # not a URL at all
        shown = url
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", shown)


def storage_option(url: str) -> str:
    """A `--storage` command-line value, checked like the YAML key."""
    try:
        return check_storage(url)
    except Bad as exc:
        raise UserError(f"--storage: {exc}") from None


def check_storage(v) -> str:
    """`sqlite` (the results folder's study.db) or a database URL (sqlite:///…, postgresql://…)."""
    if not isinstance(v, str) or not v:
        raise Bad(f"must be sqlite or a database URL such as postgresql://user@host:5432/db, got {v!r}")
    if v == "sqlite":
        return v
    scheme, sep, rest = v.partition("://")
    dialect = scheme.partition("+")[0]
    if not sep or not rest:
        raise Bad(f"'{redact(v)}' is not a database URL; use sqlite or a URL such as "
                   "postgresql://user@host:5432/db")
    if dialect not in STORAGE_SCHEMES:
        raise Bad(f"'{dialect}' databases are not supported; use sqlite or postgresql://user@host:5432/db")
    return v
