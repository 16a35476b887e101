"""Evaluating a trained image model: test bits/dim by the PF-ODE (with the record and the
one line a run reports), a sample grid, and the default size of a run's final evaluation.
The math is ``scorepde.bpd``'s and ``scorepde.sampling``'s; the errors are ``scorepde.stats``'.

Names in the record (``bpd_metrics``), each with one meaning across the project:
``bpd_stderr`` is the SE over test images, ``eval_se`` the SE over repeats (the evaluation's
own noise), ``bpd_std`` the std over repeats.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from .bpd import evaluate_bpd
from .data import SCALINGS, from_model_space
from .image_config import ImageConfig, model_scaling, run_label
from .plotting import save_grid
from .sampling import euler_maruyama
from .sde import SDE
from .stats import standard_error

__all__ = [
    "TABLE4_TIMES",
    "image_bpd",
    "bpd_of_test_images",
    "bpd_metrics",
    "bpd_summary",
    "sample_grid",
    "auto_eval_images",
    "in_chunks",
]

#: The time grid of the paper's Table 4 (App. B.2): 1e-3, 0.1, 0.2, …, 1.0.
TABLE4_TIMES = (1e-3,) + tuple(round(0.1 * i, 1) for i in range(1, 11))


def image_bpd(
    model,
    sde: SDE,
    cfg: ImageConfig,
    images: torch.Tensor,
    levels: int,
    *,
    repeats: int = 5,
    batch_size: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    progress: bool = False,
    device=None,
) -> dict:
    """Bits/dim of integer ``images`` by the PF-ODE from t_eps (``scorepde.evaluate_bpd``),
    uniform dequantization at ``levels``, Hutchinson trace, ``repeats`` repeats."""
    a, b = SCALINGS[model_scaling(cfg)]
    return evaluate_bpd(
        model,
        sde,
        images,
        levels,
        a,
        b,
        repeats=repeats,
        div="hutchinson",
        generator=generator,
        batch_size=batch_size,
        progress=progress,
        device=device,
        eps=cfg.t_eps,
        rtol=rtol,
        atol=atol,
    )


def bpd_of_test_images(
    model, sde: SDE, cfg: ImageConfig, test, images: int, *, rtol: float, repeats: int = 5, **kwargs
) -> tuple[dict, int, float]:
    """``image_bpd`` of the first ``images`` of ``test`` (an ``ImageData``; 0: all) at
    atol = rtol, its ``bpd_summary`` printed; ``kwargs`` as for ``image_bpd``. Returns
    (the result, the images used, the wall time in seconds)."""
    n = len(test) if images == 0 else min(images, len(test))
    start = time.perf_counter()
    res = image_bpd(
        model, sde, cfg, test.images[:n], test.levels, repeats=repeats, rtol=rtol, atol=rtol, **kwargs
    )
    seconds = time.perf_counter() - start
    print(bpd_summary(res, n, repeats, seconds), flush=True)
    return res, n, seconds


def bpd_metrics(res: dict) -> dict:
    """The metrics.json record of an ``image_bpd`` result: ``bpd``, ``bpd_stderr`` (SE over
    the test images), ``eval_se`` (SE over repeats; None for one repeat), ``bpd_std`` (std
    over repeats), ``bpd_per_repeat`` and ``nfe``."""
    se = standard_error(res["per_repeat"])
    return {
        "bpd": res["bpd"],
        "bpd_stderr": res["bpd_stderr"],
        "eval_se": None if se != se else se,
        "bpd_std": res["bpd_std"],
        "bpd_per_repeat": res["per_repeat"],
        "nfe": res["nfe"],
    }


def bpd_summary(res: dict, images: int, repeats: int, seconds: float) -> str:
    """One line for a bits/dim result of ``image_bpd``: the mean, its standard error over the
    repeats (none from one repeat), the test images, repeats and wall time."""
    if repeats > 1:
        value = (
            f"{res['bpd']:.4f} ± {standard_error(res['per_repeat']):.4f} (standard error over "
            f"{repeats} repeats)"
        )
    else:
        value = f"{res['bpd']:.4f} (1 repeat: no error bar)"
    return (
        f"test bits/dim: {value}; {images} test images × {repeats} repeat(s), "
        f"{seconds:.1f} s, PF-ODE, Hutchinson trace"
    )


@torch.no_grad()
def sample_grid(
    model,
    sde: SDE,
    cfg: ImageConfig,
    shape: Sequence[int],
    levels: int,
    path: str,
    *,
    n: int = 64,
    steps: int = 500,
    generator: torch.Generator | None = None,
    device=None,
    title: str | None = None,
) -> str:
    """Draw ``n`` samples by Euler–Maruyama (``steps`` steps down to t_eps), quantize them to
    the data's levels and write a PNG grid titled ``title`` (default: the run and the sampler)."""
    x = euler_maruyama(
        model, sde, (n, *shape), steps=steps, eps=cfg.t_eps, generator=generator, device=device
    )
    title = title or f"{n} samples: {run_label(cfg)}; Euler–Maruyama, {steps} steps"
    return save_grid(from_model_space(x, levels, model_scaling(cfg)).cpu(), levels, path, title=title)


def auto_eval_images(steps: int, full: int = 64, min_steps: int = 200) -> int:
    """The default number of test images for the bits/dim at the end of a training run:
    ``full`` for runs of 1000 steps or more, steps // 16 from ``min_steps`` on, and -1 (no
    evaluation) for shorter runs, whose barely trained model makes the PF-ODE stiff: minutes
    of solving, whatever the number of images, for a number that means little."""
    return -1 if steps < min_steps else min(full, int(steps) // 16)


def in_chunks(model, size: int = 256):
    """``model`` as a score callable that runs at most ``size`` samples at a time: the same values
    for a model that treats samples apart (every image U-Net here), at a fraction of the cost on
    a whole test split (the DSM loss of 2000 Fashion-MNIST images on one CPU thread: 8.8 s in one
    batch, 3.1 s in chunks of 128)."""

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if len(x) <= size:
            return model(x, t)
        t = t.expand(len(x)) if t.dim() == 0 else t
        return torch.cat([model(xc, tc) for xc, tc in zip(x.split(size), t.split(size))])

    return score
