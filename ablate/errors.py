"""The one exception a user can cause. The CLI prints it without a traceback and exits 2.

Owns: `UserError`. Does not own: deciding what is wrong (each boundary raises it).
"""


class UserError(Exception):
    """Bad input from the user: a sentence saying what is wrong and how to fix it."""
