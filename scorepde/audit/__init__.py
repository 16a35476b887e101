"""Audit score models against the score FPE: where in t, how large against its own terms,
and how two models differ on the same draws.

``run``/``audit`` (library), ``main`` (``scorepde-audit``, ``python -m scorepde.audit``).
The jobs: ``measure`` (per-sample estimates on shared draws), ``summary`` (means, ratios,
paired differences, SEs), ``provenance``, ``loading`` (models, data), ``report`` (table,
verdict, figure), ``command`` (flags; its docstring is the ``--help``).
"""

from .command import main, parse_args
from .loading import load_model
from .measure import measure
from .run import audit, run

__all__ = ["audit", "run", "measure", "load_model", "main", "parse_args"]
