"""Audit score models: how far is each from the score FPE, and where in t?

    scorepde-audit --model package.module:factory --data digits --out runs/audit
    scorepde-audit --model runs/dsm/checkpoint.pt --model runs/fp/checkpoint.pt --out runs/cmp
    python -m scorepde.audit --model path/to/my_models.py:factory --data x.npy --device cuda

``--model``: a factory returning ``(score, sde)`` (e.g. ``scorepde.from_diffusers(unet,
scheduler)``), as ``package.module:factory`` or ``path/to/file.py:factory``, or a checkpoint
written by image/train.py; given twice or more, the models are audited on the same x_t,
probes and grid, and each is compared with the first (paired differences with their SE).
On held-out x_0 pushed to each t of a log grid (x_t = a(t) x_0 + σ_t z) it reports, each
as mean ± SE over the samples (the estimator's own noise included), absolute and
dimensionless (``scorepde.audit.summary``):

  r_fp    √E‖ε[s](x_t, t)‖², the score-FPE residual (Eq. 9; Sec. 3.1, Fig. 1), and
          r_fp / (√E‖∂t s‖² + √E‖∇x L‖²): 0 solves the FPE, ≈0.7 unrelated terms
  r_dsm   √E‖s + z/σ_t‖², the DSM-like residual, and σ_t r_dsm/√D (1: the score s = 0)
  curl    √E‖J − Jᵀ‖_F² (Sec. 6.2), and curl / 2√E‖J‖_F²
  abs_L   E|L[s](x_t, t)|, the right-hand side of Eq. 7

Root mean squares, not the paper's mean norms: ‖ε‖² and ‖J − Jᵀ‖² have unbiased cheap
estimators, ‖ε‖ has none. t is shown in the model's own clock as well (the DDPM step k
for ``from_diffusers``, σ for EDM). Writes metrics.json (numbers and provenance: SDE and
schedule, prediction type, scheduler, data range, versions, the command) and audit.png to
--out, prints a table and a verdict. All math is in scorepde.
"""
from .command import main, parse_args
from .loading import load_model
from .measure import measure
from .run import audit, run

__all__ = ["audit", "run", "measure", "load_model", "main", "parse_args"]
