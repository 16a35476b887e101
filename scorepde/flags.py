"""Command-line flags that several commands share, worded once: ``--device`` and
``--trust-checkpoint``. On the ground floor so that the audit's command (``scorepde.audit``)
and ``scorepde.commands`` both use them; no math, no command here."""

from __future__ import annotations

__all__ = ["add_device_flag", "add_trust_flag"]


def add_device_flag(p, doing: str) -> None:
    """``--device auto|cpu|cuda`` (default auto) on ``p``, a parser or a group; ``doing``
    completes the help's "where to ..." (``"train"``, ``"evaluate"``, ``"run"``)."""
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help=f"where to {doing} (default auto: CUDA if torch sees a GPU, else CPU)",
    )


def add_trust_flag(p, which: str = "a checkpoint") -> None:
    """``--trust-checkpoint`` on ``p``: open ``which`` (e.g. ``"a --model checkpoint"``) even
    when it needs code to load (``scorepde.checkpoints``)."""
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help=f"open {which} that needs code to load (one you made yourself with an older "
        "scorepde); never for a file from someone else",
    )
