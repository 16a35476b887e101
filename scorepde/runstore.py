"""One JSON file per finished run, so an experiment grid resumes where it stopped.

A run is named by its fields (e.g. data set, method, β, seed, budget); ``run_name`` turns
them into a file name, ``RunStore.done`` says whether that run has a result, and
``RunStore.save`` writes it atomically (a half-written file never counts as done).
Scripts loop over their grid and skip what is done; two processes can share a grid by
``shard`` (run i of the grid, or of each kind of run in it, belongs to shard i mod n).
A run file that does not parse (truncated by a full disk, edited by hand) is not done: it is
renamed to ``<name>.json.corrupt`` (kept, never deleted) with a warning that names it, and
that run alone is redone.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from typing import Callable, TypeVar

from .atomic import atomic_write

__all__ = ["run_name", "RunStore", "parse_shard", "shard_of"]

T = TypeVar("T")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)  # shortest exact form: 0.0015 and 0.00150001 stay apart
    return str(v)


def run_name(**fields) -> str:
    """``key=value`` pairs in the given order, joined by ``__`` (a file-name-safe stem)."""
    if not fields:
        raise ValueError("a run needs at least one field to be named by")
    parts = []
    for k, v in fields.items():
        s = f"{k}={_fmt(v)}"
        if _SAFE.search(s.replace("=", "")):
            raise ValueError(
                f"run field {k}={v!r} has characters unsafe in a file name; use letters, digits and . _ + -"
            )
        parts.append(s)
    return "__".join(parts)


class RunStore:
    """A folder of finished runs, ``DIR/<run_name>.json``, each holding its fields and result."""

    def __init__(self, folder: str):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def path(self, **fields) -> str:
        return os.path.join(self.folder, run_name(**fields) + ".json")

    def done(self, **fields) -> bool:
        """Whether the run has a readable result; an unreadable one is set aside (see above)."""
        path = self.path(**fields)
        return os.path.isfile(path) and _read(path) is not None

    def load(self, **fields) -> dict:
        path = self.path(**fields)
        result = _read(path) if os.path.isfile(path) else None
        if result is None:
            raise ValueError(
                f"run file {path} is missing or was unreadable (see the warning "
                "above); run the grid again to redo that run"
            )
        return result

    def save(self, result: dict, **fields) -> str:
        """Write ``{**fields, **result}`` atomically; returns the path."""
        return atomic_write(
            self.path(**fields), lambda f: json.dump({**fields, **result}, f, indent=1), binary=False
        )

    def all(self) -> list[dict]:
        """Every finished run in the folder (sorted by file name)."""
        out = []
        for name in sorted(os.listdir(self.folder)):
            if name.endswith(".json") and not name.startswith("."):
                result = _read(os.path.join(self.folder, name))
                if result is not None:
                    out.append(result)
        return out


def _read(path: str) -> dict | None:
    """The run file's result, or None after setting an unreadable one aside as ``.corrupt``."""
    try:
        with open(path) as f:
            result = json.load(f)
        if isinstance(result, dict):
            return result
        problem = f"holds a {type(result).__name__}, not a run's fields and result"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problem = f"does not parse as JSON ({err})"
    aside = path + ".corrupt"
    os.replace(path, aside)
    warnings.warn(f"run file {path} {problem}: kept as {aside}, and that run will be redone", stacklevel=3)
    return None


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (0 ≤ i < n) to (i, n); None to (0, 1)."""
    if text is None:
        return 0, 1
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(
            f"shard must be 'i/n' with 0 <= i < n (e.g. 0/2 and 1/2 for two processes), got {text!r}"
        )
    return int(m.group(1)), int(m.group(2))


def shard_of(
    items: Sequence[T], shard: tuple[int, int], kind: Callable[[T], Hashable] | None = None
) -> Iterator[T]:
    """The items of the grid that belong to ``shard = (i, n)``: dealt round-robin within each
    ``kind(item)`` (e.g. the run's β), so that each shard gets its share of every kind of run,
    the cheap and the costly alike; each kind's deal starts where the previous kind's (in order
    of first appearance) ended, so that the shards' totals also differ by at most one."""
    i, n = shard
    kinds = [None if kind is None else kind(item) for item in items]
    start: dict[Hashable, int] = {}
    dealt = 0
    for k, count in Counter(kinds).items():  # in order of first appearance
        start[k], dealt = dealt, dealt + count
    seen: dict[Hashable, int] = {}
    for item, k in zip(items, kinds):
        if (start[k] + seen.get(k, 0)) % n == i:
            yield item
        seen[k] = seen.get(k, 0) + 1
