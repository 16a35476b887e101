"""Checkpoint I/O that carries no code: what scorepde writes (weights, optimiser, schedule,
EMA, random states, config, step, log position) is tensors and plain data, so it loads with
``torch.load(weights_only=True)``, PyTorch's loader that never calls what a file names.

A file that needs more than that (a pickle with a ``__reduce__`` payload, a model object) is
refused with a ``ValueError`` naming it; ``trust=True`` (the scripts' ``--trust-checkpoint``)
opens such a file the old way, for a file you made yourself. Checkpoints written before
2026-12-06 held numpy's random state as a numpy array: they load without ``trust``, since
that one array is rebuilt by the same restricted loader, and are converted on load. To
rewrite one in today's format (one line)::

    python -c "from scorepde.checkpoints import *; save_checkpoint('new.pt', load_checkpoint('old.pt'))"
"""

from __future__ import annotations

import hashlib
import os
import pickle
import pickletools
import random

import numpy as np
import torch

from .atomic import atomic_write

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "read_torch_file",
    "weights_id",
    "rng_state",
    "set_rng_state",
    "training_state",
    "restore_training_state",
    "TRUST_HINT",
]

#: The way out named by every refusal.
TRUST_HINT = (
    "If you made this file yourself (e.g. with an older scorepde), open it with "
    "trust=True (--trust-checkpoint on the command line); never do so for a file from "
    "someone else: loading it can run any code"
)

_PLAIN = (str, int, float, bool, type(None))
#: What an older scorepde's numpy random state needs: an ndarray rebuilt from its bytes.
_NUMPY_ARRAY = {
    "numpy.dtype",
    "numpy.ndarray",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
    "numpy.dtypes.UInt32DType",
}


def _numpy_globals() -> list:
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    return [
        np.dtype,
        np.ndarray,
        type(np.dtype(np.uint32)),
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
    ]


def _check_plain(obj, where: str = "state") -> None:
    """Raise ``ValueError`` naming the first entry that is neither a tensor nor plain data."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN or isinstance(obj, (torch.dtype, torch.Size)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if type(k) not in _PLAIN:
                raise ValueError(
                    f"checkpoint key {k!r} in {where} is a {type(k).__name__}; use str or int keys"
                )
            _check_plain(v, f"{where}[{k!r}]")
    elif type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    else:
        raise ValueError(
            f"checkpoint entry {where} is a {type(obj).__module__}.{type(obj).__name__}: a "
            "checkpoint holds only tensors and plain data (dict, list, tuple, str, int, float, "
            "bool, None), so that it loads without running code; convert it (torch.as_tensor, "
            ".tolist(), float(), dataclasses.asdict)"
        )


def save_checkpoint(path: str, state: dict) -> None:
    """Write ``state`` (tensors and plain data only, else ``ValueError`` naming the entry)
    atomically: a temporary file in the same folder, then an atomic rename."""
    _check_plain(state)
    atomic_write(path, lambda f: torch.save(state, f))


def _unsafe_globals(path: str) -> list:
    """The code a file names beyond tensors and plain data (what weights_only refused); an
    empty list when its bytes are no pickle at all (corrupt)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not torch's zip format: read it as a bare pickle, without running it
        pass
    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # bytes that are no pickle: corrupt, not code
        return []
    return sorted(set(names))


def read_torch_file(
    path: str,
    map_location="cpu",
    *,
    trust: bool = False,
    what: str = "scorepde checkpoint",
    hint: str = TRUST_HINT,
):
    """``torch.load(path, weights_only=True)``, with errors that name ``path``: a file that
    needs code to load is refused (``hint`` says what to do) unless ``trust``; one whose only
    extra is numpy arrays (an older scorepde's random state) loads, the arrays rebuilt by the
    same restricted loader."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {what} at {path}; pass the path of a {what} file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            return _unreadable(path, err, what)
        unsafe = _unsafe_globals(path)
        if not unsafe:
            return _unreadable(path, pickle.UnpicklingError("its bytes are no pickle"), what)
        if set(unsafe) <= _NUMPY_ARRAY:
            with torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)
        if not trust:
            raise ValueError(
                f"{path} holds more than tensors and plain data (it names {', '.join(unsafe)}): loading it "
                f"could run code, so it was not opened. {hint}"
            ) from None
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch/pickle/zip raise many types for bad bytes
        return _unreadable(path, err, what)


def _unreadable(path: str, err: Exception, what: str):
    reason = " ".join(str(err).split())[:120] or type(err).__name__
    raise ValueError(
        f"{path} is not a readable {what} ({type(err).__name__}: {reason}); it is corrupt "
        f"or truncated or not a {what}: pass another, or delete it and write it again"
    ) from err


def load_checkpoint(path: str, map_location="cpu", *, trust: bool = False) -> dict:
    """The state a ``save_checkpoint`` wrote; ``FileNotFoundError``/``ValueError`` naming
    ``path`` when it is missing, not a readable checkpoint (corrupt, truncated, not torch's),
    or needs code to load (refused unless ``trust=True``: see the module docstring). Random
    states of older checkpoints come back in today's form (tensors)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no checkpoint at {path}; pass the path of a checkpoint.pt written by training"
        )
    state = read_torch_file(path, map_location, trust=trust)
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(
            f"{path} is a torch file but not a scorepde checkpoint (no model "
            "weights and step); pass a checkpoint.pt written by training"
        )
    if isinstance(state.get("rng"), list):
        state["rng"] = [_rng_as_tensors(s) for s in state["rng"]]
    elif isinstance(state.get("rng"), dict):
        state["rng"] = _rng_as_tensors(state["rng"])
    return state


def weights_id(state_dict: dict[str, torch.Tensor], length: int = 12) -> str:
    """A short SHA-256 of a state dict (names, dtypes, shapes and bytes of every tensor):
    two models share it only when their weights are bit-equal. It names the model a run
    started from, so that runs from bases retrained on another machine are never paired."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


def rng_state(generator: torch.Generator | None = None) -> dict:
    """Every random state a resumed run needs to continue exactly, as tensors and numbers:
    torch's, numpy's legacy global (MT19937 key, position, cached Gaussian), Python's
    ``random`` (its 625 words), CUDA's, and ``generator``'s."""
    return _rng_as_tensors(
        {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
            **({"generator": generator.get_state()} if generator is not None else {}),
        }
    )


def _rng_as_tensors(state: dict) -> dict:
    """``state`` with numpy's and Python's states as tensors (older checkpoints held a numpy
    array and a tuple); states already in that form pass through."""
    state = dict(state)
    if isinstance(state.get("numpy"), tuple):
        _, key, pos, has_gauss, gauss = state["numpy"]
        state["numpy"] = {
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(gauss),
        }
    if isinstance(state.get("python"), tuple):
        version, words, gauss_next = state["python"]
        state["python"] = {
            "version": int(version),
            "words": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss_next,
        }
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Restore what ``rng_state`` returned (or an older checkpoint's form of it)."""
    state = _rng_as_tensors(state)
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(w) for w in p["words"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].cpu())


def training_state(
    step: int,
    model: torch.nn.Module,
    optimizer,
    scheduler=None,
    ema=None,
    rng: list[dict] | None = None,
    config: dict | None = None,
    **extra,
) -> dict:
    """What a checkpoint holds: weights, EMA, optimiser and schedule, the next ``step``,
    every process's random states (``rng[rank]``) and the run's config (plain data)."""
    state = {
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng or [],
        "config": config or {},
        **extra,
    }
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if ema is not None:
        state["ema"] = ema.state_dict()
    return state


def restore_training_state(
    state: dict, model: torch.nn.Module, optimizer=None, scheduler=None, ema=None
) -> int:
    """Load what ``training_state`` saved into the given objects; returns the next step."""
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if ema is not None and "ema" in state:
        ema.load_state_dict(state["ema"])
    return int(state["step"])
