"""Command-line plumbing shared by the commands: one-line fatal errors and the argument
parser they all start from. No math lives here, and no command: those are
``scorepde.commands.<name>:main`` (``[project.scripts]``).

A user's mistake on the command line ends in one line on stderr, ``error: <what is wrong
and what to do>``, and exit status 2, never a traceback: scripts wrap their setup (flags,
files, devices) in ``user_errors()``, and the library raises ``ValueError`` (or
``FileNotFoundError``) with such a message.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from .errors import fail, user_errors  # the ground floor's; re-exported for the commands

__all__ = ["fail", "user_errors", "parser", "add_run_flags", "HelpFormatter"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where the help does not state its default already and
    the default is a value (not None, not a flag's False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that takes a flag's help from ``shared_help`` where none is given."""

    def __init__(self, *args, shared_help: Mapping[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.shared_help = dict(shared_help or {})

    def add_argument(self, *names, **kwargs):
        if not kwargs.get("help"):
            kwargs["help"] = next((self.shared_help[n] for n in names if n in self.shared_help), None)
        return super().add_argument(*names, **kwargs)


def parser(
    description: str, *, shared_help: Mapping[str, str] | None = None, prog: str | None = None
) -> argparse.ArgumentParser:
    """The parser every command starts from: ``HelpFormatter`` (defaults shown once), and
    ``shared_help`` (flag → help) for the flags a family of commands shares, used where an
    ``add_argument`` call gives no help."""
    return _Parser(prog=prog, description=description, formatter_class=HelpFormatter, shared_help=shared_help)


def add_run_flags(
    p: argparse.ArgumentParser,
    *,
    out_help: str = "output folder for metrics.json and figures",
    threads_help: str = "torch CPU threads",
) -> None:
    """The flags of a short experiment: ``--out``, ``--quick``, ``--seed``, ``--device``, ``--threads``."""
    p.add_argument("--out", default=None, help=out_help)
    p.add_argument("--quick", action="store_true", help="a tiny run (<1 min) for tests")
    p.add_argument("--seed", type=int, default=0, help="base random seed")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train and evaluate")
    p.add_argument("--threads", type=int, default=None, help=threads_help)
