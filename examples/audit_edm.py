"""Audit an EDM-style denoiser: how far is its score from the score FPE, and where in t?

    python examples/audit_edm.py                 # about a minute of CPU
    python examples/audit_edm.py --steps 200     # seconds

EDM (Karras et al., 2022) trains a denoiser D(x, σ) ≈ E[x_0 | x_0 + σ z] behind a fixed
preconditioning. ``sp.from_denoiser(D, sp.EDMSDE())`` turns it into ``score(x, t)`` with
s = (D(x, σ) − x)/σ² and σ(t) = t, and every tool of scorepde then applies. Here D is a small
MLP with EDM's preconditioning, trained briefly on a 2-D Gaussian mixture; beside it, the
mixture's ideal denoiser (its closed form), whose score solves the score FPE exactly. The
audit prints r_FP(t) = sqrt E‖ε[s]‖² and the curl for both, exactly (D = 2): the ideal
denoiser's are round-off, the trained one's what training left.
"""

from __future__ import annotations

import argparse
import math

import torch

import scorepde as sp
from scorepde.audit import audit
from scorepde.training import fit

SIGMA_DATA = 0.5  # EDM's σ_data


class Denoiser(torch.nn.Module):
    """D(x, σ) = c_skip x + c_out F(c_in x, c_noise): EDM's preconditioning (Table 1) around an MLP F."""

    def __init__(self, dim: int = 2, hidden: int = 128):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma[:, None]
        c_skip = SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)
        c_out = s * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()
        c_in = 1 / (s**2 + SIGMA_DATA**2).sqrt()
        return c_skip * x + c_out * self.net(torch.cat([c_in * x, s.log() / 4], 1))


def train(denoiser: Denoiser, data: sp.GaussianMixture, steps: int, seed: int) -> None:
    """EDM's loss: λ(σ) ‖D(x_0 + σ z, σ) − x_0‖², log σ ~ N(−1.2, 1.2²), λ = 1/c_out²."""
    gen = torch.Generator().manual_seed(seed)

    def objective(x0, generator):
        sigma = (torch.randn(len(x0), generator=generator, dtype=x0.dtype) * 1.2 - 1.2).exp()
        weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
        noisy = x0 + sigma[:, None] * torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        return (weight * (denoiser(noisy, sigma) - x0).pow(2).sum(1)).mean(), {}

    batches = (data.sample(256, generator=gen, dtype=torch.float64) for _ in iter(int, 1))
    fit(
        objective,
        torch.optim.Adam(denoiser.parameters(), lr=2e-3),
        batches,
        steps,
        generator=gen,
        progress=False,
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000, help="training steps of the denoiser")
    p.add_argument("--points", type=int, default=256, help="held-out points the audit uses")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    sde = sp.EDMSDE(sigma_min=0.002, sigma_max=80.0)
    data = sp.GaussianMixture([[-1.0, -0.5], [1.0, 0.5]], stds=[0.2, 0.3], weights=[0.5, 0.5])
    ideal = lambda x, sigma: x + (sigma**2)[:, None] * data.score(x, sigma, sde)  # E[x_0 | x], Tweedie
    denoiser = Denoiser().double()
    train(denoiser, data, args.steps, args.seed)

    x0 = data.sample(args.points, generator=torch.Generator().manual_seed(args.seed + 1), dtype=torch.float64)
    ts = [0.01, 0.05, 0.2, 1.0]  # t is σ under EDM
    rows = {}
    for name, d in (("ideal", ideal), ("trained", denoiser)):
        score, sde = sp.from_denoiser(d, sde)
        result = audit(score, sde, x0, ts, estimator="exact", curl="exact", progress=False)  # exact in 2-D
        rows[name] = [r["mean"] for r in result["r_fp"]], [r["mean"] for r in result["curl"]]
    print("σ = t     r_FP ideal   r_FP trained   curl ideal   curl trained")
    for i, t in enumerate(ts):
        print(
            f"{t:<8g} {rows['ideal'][0][i]:12.3g} {rows['trained'][0][i]:14.3g} "
            f"{rows['ideal'][1][i]:12.3g} {rows['trained'][1][i]:14.3g}"
        )
    assert all(math.isfinite(v) for v in rows["trained"][0])
    return {"t": ts, "r_fp_ideal": rows["ideal"][0], "r_fp_trained": rows["trained"][0]}


if __name__ == "__main__":
    main()
