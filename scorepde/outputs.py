"""Output folders that never lose a result: ``prepare_out`` before writing, ``announce`` after.

    out = prepare_out(args.out, resume=args.resume, overwrite=args.overwrite)
    ...write metrics.json and figures into out...
    announce(out)

A folder *holds results* when any file lies anywhere inside it (an empty folder, or one with
only empty subfolders, does not). Such a folder is refused unless the caller passes
``resume`` (carry on with what is there) or ``overwrite`` (write over it: files of the same
name are replaced, nothing else is deleted). A relative path is relative to the current
directory, never to the source checkout.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Iterable
from typing import Union

__all__ = ["holds_results", "prepare_out", "announce"]

PathLike = Union[str, "os.PathLike[str]"]


def holds_results(path: PathLike) -> list[str]:
    """The files anywhere inside ``path`` (names relative to it, sorted), or ``[]``."""
    root = pathlib.Path(path)
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def prepare_out(
    path: PathLike, *, resume: bool = False, overwrite: bool = False, can_resume: bool = True
) -> pathlib.Path:
    """Create the output folder ``path`` and return it, refusing one that already holds results.

    Raises ``ValueError`` naming the folder, a few of its files and the flags ``--resume``
    and ``--overwrite`` when it holds results and neither is given, when both are given,
    or when ``path`` is a file. ``can_resume=False``: the command has no ``--resume``, so the
    refusal offers ``--overwrite`` alone.
    """
    out = pathlib.Path(path)
    if resume and overwrite:
        raise ValueError(
            "--resume and --overwrite exclude each other: --resume continues the results "
            f"in {out}, --overwrite replaces them; pass one"
        )
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; pass a folder for the results")
    files = holds_results(out)
    if files and not (resume or overwrite):
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        offer = "pass --resume to continue them, --overwrite" if can_resume else "pass --overwrite"
        raise ValueError(f"{out} already holds results ({shown}); {offer} to replace them, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def announce(path: PathLike, files: Iterable[str] | None = None, *, file=None) -> None:
    """Print where the results were written: ``results in <absolute folder>`` (and which files)."""
    where = pathlib.Path(path).resolve()
    names = list(files) if files is not None else []
    tail = f" ({', '.join(names)})" if names else ""
    print(f"results in {where}{tail}", file=file or sys.stdout, flush=True)
