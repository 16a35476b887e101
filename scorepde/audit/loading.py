"""The way into the audit: a model from a factory or a checkpoint, and held-out data in its space.

``--model`` is ``package.module:factory``, ``path/to/file.py:factory`` (imported from that
file, its folder on the path) or a checkpoint written by image/train.py. A factory returns
``(score, sde)``. Errors in the user's own code keep their traceback; everything else is a
``ValueError`` or ``FileNotFoundError`` that says what to do.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..checks import check_finite
from ..sde import SDE

__all__ = ["Loaded", "FactoryError", "load_model", "load_data", "check_range"]


@dataclass
class Loaded:
    """A model ready to audit: its score, SDE, model space (None: unknown) and own dataset."""

    score: Callable
    sde: SDE
    scaling: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    info: dict = field(default_factory=dict)

    def __iter__(self):
        """``score, sde, scaling, dataset = load_model(...)``, the old tuple, warns (one release)."""
        warnings.warn(
            "load_model returns a Loaded (score, sde, scaling, dataset, data_dir, info); unpacking "
            "it as a 4-tuple is deprecated: use its attributes",
            DeprecationWarning,
            stacklevel=2,
        )
        return iter((self.score, self.sde, self.scaling, self.dataset))


class FactoryError(Exception):
    """The user's factory (or its module) raised; ``details`` holds their traceback."""

    def __init__(self, message: str, details: str):
        super().__init__(message)
        self.details = details


def _load_checkpoint(path: str, device, trust: bool = False) -> Loaded:
    """An image/train.py checkpoint, opened without running code unless ``trust``
    (``scorepde.checkpoints``)."""
    from ..checkpoints import load_checkpoint
    from ..data import load_dataset
    from ..image_config import load_trained, model_scaling

    state = load_checkpoint(path, map_location=device, trust=trust)
    config = state.get("config", {})
    shape = load_dataset(config.get("dataset", "digits"), "test", config.get("data_dir")).shape
    cfg, sde, model = load_trained(state, shape, "ema", device)
    info = {
        "kind": "checkpoint",
        "step": state.get("step"),
        "training": {
            k: config.get(k)
            for k in (
                "dataset",
                "sde",
                "objective",
                "beta",
                "estimator",
                "m",
                "fp_weighting",
                "steps",
                "seed",
            )
            if k in config
        },
    }
    return Loaded(model, sde, model_scaling(cfg), cfg.dataset, config.get("data_dir"), info)


def _user_traceback(err: BaseException) -> str:
    """The traceback of ``err`` from the user's first frame on (the audit's and importlib's
    own frames at its head dropped)."""
    here = os.path.dirname(os.path.abspath(__file__))
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        name = tb.tb_frame.f_code.co_filename
        if not (name.startswith("<frozen") or os.path.abspath(name).startswith(here)):
            break
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(err), err, tb))


def _import_file(spec: str, target: str):
    """The module of the file ``target``, its folder on the path (its neighbours import)."""
    if not os.path.isfile(target):
        raise FileNotFoundError(f"--model {spec}: no such file {target!r}")
    path = os.path.abspath(target)
    if os.path.dirname(path) not in sys.path:
        sys.path.insert(0, os.path.dirname(path))
    name = os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"--model {spec}: {target} cannot be imported as a Python module; pass a .py file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def _import_module(spec: str, target: str):
    """The module ``target`` names, a dotted module or a .py file (``spec`` for messages)."""
    as_file = target.endswith(".py") or os.sep in target or "/" in target
    try:
        return _import_file(spec, target) if as_file else importlib.import_module(target)
    except ModuleNotFoundError as err:
        if not as_file and err.name and (target == err.name or target.startswith(err.name + ".")):
            raise ValueError(
                f"--model {spec}: no module named {err.name!r}; run from the folder that "
                "holds it, put that folder on PYTHONPATH, or pass the file itself "
                f"(path/to/{target.replace('.', '/')}.py:factory)"
            ) from None
        raise FactoryError(
            f"importing {target} for --model {spec} raised {type(err).__name__}: {err} "
            "(traceback above, from your module)",
            _user_traceback(err),
        ) from err
    except FileNotFoundError:
        raise
    except Exception as err:  # the user's module raised while importing: their bug, their traceback
        raise FactoryError(
            f"importing {target} for --model {spec} raised {type(err).__name__}: {err} "
            "(traceback above, from your module)",
            _user_traceback(err),
        ) from err


def _call_factory(spec: str) -> tuple[Callable, SDE]:
    target, name = spec.rsplit(":", 1)
    module = _import_module(spec, target)
    factory = getattr(module, name, None)
    if factory is None:
        offered = sorted(
            k
            for k, v in vars(module).items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        raise ValueError(
            f"--model {spec}: {target} has no {name!r}; it defines {', '.join(offered) or 'no functions'}"
        )
    if not callable(factory):
        raise ValueError(
            f"{spec} is a {type(factory).__name__}, not a factory; --model needs a function "
            "that returns (score, sde)"
        )
    try:
        made = factory()
    except Exception as err:  # a bug in the user's factory: show them where
        raise FactoryError(
            f"your factory {spec} raised {type(err).__name__}: {err} (traceback above, from your code)",
            _user_traceback(err),
        ) from err
    if not (isinstance(made, tuple) and len(made) == 2 and callable(made[0]) and isinstance(made[1], SDE)):
        raise ValueError(
            f"{spec} must return (score, sde), e.g. scorepde.from_diffusers(unet, scheduler); "
            f"got {type(made).__name__}"
        )
    return made


def load_model(spec: str, device="cpu", *, trust: bool = False) -> Loaded:
    """The model ``spec`` names (module docstring), on ``device``, in eval mode; a checkpoint
    is opened without running code unless ``trust`` (``scorepde.checkpoints``)."""
    if os.path.isfile(spec):
        return _load_checkpoint(spec, device, trust)
    if ":" not in spec.replace(":\\", ""):
        if spec.endswith((".pt", ".pth", ".ckpt")) or os.sep in spec or "/" in spec:
            raise FileNotFoundError(
                f"--model {spec}: no such file; pass an image/train.py checkpoint or package.module:factory"
            )
        raise ValueError(
            f"--model must be package.module:factory, path/to/file.py:factory or a "
            f"checkpoint file, got {spec!r} (no such file, and no ':')"
        )
    score, sde = _call_factory(spec)
    if isinstance(score, torch.nn.Module):
        score = score.to(device).eval()
    unet = getattr(score, "unet", None)
    if isinstance(unet, torch.nn.Module):
        unet.to(device).eval()
    return Loaded(score, sde, info={"kind": "factory"})


def load_data(
    name: str, scaling: str, n: int, generator: torch.Generator, data_dir: str | None = None
) -> tuple[torch.Tensor, str]:
    """(n held-out samples [n, ...], where they came from): a dataset's test split in the
    model space ``scaling``, or a saved .pt/.npy tensor (taken as it is)."""
    if name.endswith((".pt", ".pth", ".npy")) or os.sep in name or "/" in name:
        if not os.path.isfile(name):
            raise FileNotFoundError(
                f"--data {name}: no such file; pass a .pt/.npy tensor [N, ...] or a dataset name"
            )
        if name.endswith(".npy"):
            x = torch.from_numpy(np.load(name))
        else:
            from ..checkpoints import read_torch_file

            x = read_torch_file(
                name, what="tensor file", hint="Save the data as one tensor: torch.save(x, path)"
            )
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
            raise ValueError(f"{name} must hold one tensor [N, ...] in the model's space")
        source = "file"
        x = check_finite(x.float(), f"--data {name}")
    else:
        from ..data import load_dataset, to_model_space

        test = load_dataset(name, "test", data_dir)
        x = to_model_space(test.images, test.levels, scaling)[0]
        source = f"{name} test split, scaled to {scaling}"
    idx = torch.randperm(x.shape[0], generator=generator)[:n]
    return x[idx], source


def check_range(x: torch.Tensor, scaling: str, where: str) -> dict[str, float]:
    """The data's observed range; a ``ValueError`` naming it and the model's ``scaling`` when
    the data lies clearly outside it (beyond half the interval's width on either side)."""
    from ..data import scaling_coefficients

    a, b = scaling_coefficients(scaling)
    lo, hi = b, a + b
    found = {"min": float(x.min()), "max": float(x.max())}
    margin = 0.5 * (hi - lo)
    if found["min"] < lo - margin or found["max"] > hi + margin:
        raise ValueError(
            f"{where} ranges over [{found['min']:.4g}, {found['max']:.4g}], but the model works "
            f"in {scaling}: rescale the data to {scaling}, pass --scaling [0,1] or [-1,1] if "
            "the model works there, or --force to audit anyway"
        )
    return found
