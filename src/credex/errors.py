"""The root of every error credex raises on purpose.

Like sigstore's ``Error``, each error says what went wrong in the caller's terms
and what to do about it, so the command line and the gRPC edge can show it as it
is; anything that is not a :class:`CredexError` is a bug and shown as one.
Subsystems derive their own errors from it (a config error, a refused signature,
an invalid proof), so a caller can catch one family or all of credex at once.
"""

from __future__ import annotations


class CredexError(Exception):
    """An error credex raised on purpose; ``str()`` is a message meant for the operator or caller."""


__all__ = ["CredexError"]
