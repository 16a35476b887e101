"""Deprecated (kept for one release): ``scorepde.imaging`` was split by job.

- the config and builders: ``scorepde.image_config`` (``ImageConfig``, ``build_sde``, …, ``load_trained``)
- evaluation and samples: ``scorepde.image_eval`` (``test_bpd`` is now ``image_bpd``;
  ``bpd_standard_error`` is ``bpd_metrics(res)["eval_se"]``)
- PNG grids: ``scorepde.plotting.save_grid``; the Table-4 markdown: ``scorepde.reporting.residual_table``

Every name still resolves here, with a DeprecationWarning that says where it lives now.
"""

from __future__ import annotations

import importlib
import warnings

_HOMES = {
    "image_config": (
        "ImageConfig",
        "SDE_NAMES",
        "OBJECTIVES",
        "build_sde",
        "build_score_model",
        "build_objective",
        "preset_config",
        "model_scaling",
        "load_trained",
        "run_label",
    ),
    "image_eval": ("TABLE4_TIMES", "bpd_summary", "sample_grid", "auto_eval_images"),
    "plotting": ("save_grid",),
    "reporting": ("residual_table",),
}
_RENAMED = {"test_bpd": ("image_eval", "image_bpd")}


def _bpd_standard_error(res: dict, repeats: int) -> float | None:
    """The evaluation's SE over repeats (None for one): ``image_eval.bpd_metrics(res)["eval_se"]``."""
    from .stats import standard_error

    return standard_error(res["per_repeat"]) if repeats > 1 else None


def __getattr__(name: str):
    if name == "bpd_standard_error":
        warnings.warn(
            "scorepde.imaging.bpd_standard_error is deprecated; use "
            "scorepde.image_eval.bpd_metrics(res)['eval_se']",
            DeprecationWarning,
            stacklevel=2,
        )
        return _bpd_standard_error
    home, new = _RENAMED.get(name, (None, name))
    home = home or next((m for m, names in _HOMES.items() if name in names), None)
    if home is None:
        raise AttributeError(f"module 'scorepde.imaging' has no attribute {name!r}")
    warnings.warn(
        f"scorepde.imaging is deprecated; import {new} from scorepde.{home}", DeprecationWarning, stacklevel=2
    )
    return getattr(importlib.import_module(f"scorepde.{home}"), new)
