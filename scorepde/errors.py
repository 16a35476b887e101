"""One-line fatal errors: a user's mistake ends in ``error: <what is wrong and what to do>``
on stderr and exit status 2, never a traceback. The ground floor of the command-line
plumbing (``scorepde.cli`` re-exports it), so that library packages with their own entry
point (``scorepde.audit``) use it without importing the commands' layer.
"""

from __future__ import annotations

import contextlib
import sys
from typing import NoReturn

__all__ = ["fail", "user_errors"]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(code)


@contextlib.contextmanager
def user_errors(code: int = 2):
    """Turn the ``ValueError``/``FileNotFoundError`` of bad input inside the block into ``fail``."""
    try:
        yield
    except (ValueError, FileNotFoundError) as err:
        fail(str(err), code)
