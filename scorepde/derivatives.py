"""Derivative operators of a field ``fn(x)`` or ``score(x, t)``: exact and estimated forms.

The lowest layer of scorepde. Each operator is a pure function of a callable and works
per sample on x of shape ``[B, ...]`` (t of shape ``[B]``). They rely on the callable
treating samples independently (``scorepde.checks`` enforces it) and compose with
``torch.func`` and with ordinary autograd on the callable's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable

import torch
from torch.func import jvp, vjp, vmap

from .typing import Score, renamed_keywords, time_conditioning

Field = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "broadcast_to_batch",
    "sample_probes",
    "time_derivative",
    "divergence",
    "jacobian",
    "hutchpp_divergence",
    "stencil_points",
    "time_steps",
    "value_and_divergence",
    "value_and_stacked_divergence",
    "PROBES",
    "STENCILS",
    "PAPER_STEPS",
    "FD_PHASE",
]

#: (h_s, h_d), the backward and forward steps of the paper's stencil (App. C.1). Fine for a
#: net that sees t itself (≈3e-3 relative error on an MLP); 10-20% off on nets conditioned
#: on 999 t or Fourier features of log σ, which turn ~1 radian over h = 1e-3.
PAPER_STEPS = (1e-3, 5e-4)

#: φ: the phase, in radians, by which a step h = φ / rate may turn a score's fastest time
#: feature (``time_steps``), per dtype. A central difference's truncation error grows like
#: φ²/6, its round-off like (machine ε)/φ; φ = 0.03 is where they meet in float32 on the
#: default image U-Nets (``benchmarks/time_steps.py`` sweeps φ against the jvp).
FD_PHASE = {torch.float16: 0.3, torch.bfloat16: 0.3, torch.float32: 0.03, torch.float64: 1e-4}


def broadcast_to_batch(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample ``[B]`` tensor so it broadcasts against ``x`` of shape ``[B, ...]``."""
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim()))


# ---------------------------------------------------------------------------------------
# Probes: E[v] = 0, E[v v^T] = I.
# ---------------------------------------------------------------------------------------


def _rademacher(shape, like, generator):
    bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return bits.to(like.dtype).mul_(2).sub_(1)


def _gaussian(shape, like, generator):
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def _sphere(shape, like, generator):
    """Uniform on the sphere of radius sqrt(D), per sample: also E[v v^T] = I."""
    v = _gaussian(shape, like, generator)
    flat = v.flatten(2)
    return (flat * (math.sqrt(flat.shape[-1]) / flat.norm(dim=-1, keepdim=True))).view(shape)


PROBES = {"rademacher": _rademacher, "gaussian": _gaussian, "sphere": _sphere}


def sample_probes(
    x: torch.Tensor, n: int = 1, kind: str = "rademacher", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``n`` probe tensors shaped like ``x``: returns ``[n, B, ...]`` with E[v v^T] = I."""
    if kind not in PROBES:
        raise ValueError(f"unknown probe {kind!r}; choose one of {sorted(PROBES)}")
    if n < 1:
        raise ValueError(f"the number of probes must be at least 1, got {n}")
    return PROBES[kind]((n,) + tuple(x.shape), x, generator)


# ---------------------------------------------------------------------------------------
# d/dt s(x, t)
# ---------------------------------------------------------------------------------------

#: The steps of a stencil in t, as a share of t, at a t where the given steps would reach
#: below 0 (t < h_s): there they shrink in proportion to t instead of the stencil shifting
#: inwards, which differentiated a one-sided interpolant over a span wider than t
#: (2-690x relative error in ∂t s under VP for t < 1e-3 with the paper's steps; about 1%
#: with this share).
STEP_FRACTION = 0.125

#: Named finite-difference stencils: offsets in t around a centre, as functions of h.
STENCILS = {
    # App. C.1 (Lemma C.1): nodes t - h_s, t, t + h_d, error O(h_s h_d).
    "fd3": lambda h: (-h[0], 0.0, h[1]),
    "central": lambda h: (-h[0], 0.0, h[0]),
    # one-sided, first order: (s(t + h) − s(t))/h, error O(h); one evaluation when the caller
    # passes s(x, t) as ``center``.
    "forward": lambda h: (0.0, h[0]),
}


def _lagrange_derivative_weights(t: torch.Tensor, nodes: Sequence[torch.Tensor]) -> list:
    """Weights w_i with p'(t) = sum_i w_i p(nodes_i) for the interpolating polynomial p."""
    weights = []
    for i, ti in enumerate(nodes):
        others = [tj for j, tj in enumerate(nodes) if j != i]
        denom = torch.ones_like(t)
        for tj in others:
            denom = denom * (ti - tj)
        numer = torch.zeros_like(t)
        for j, _tj in enumerate(others):
            term = torch.ones_like(t)
            for k, tk in enumerate(others):
                if k != j:
                    term = term * (t - tk)
            numer = numer + term
        weights.append(numer / denom)
    return weights


def _stencil(t: torch.Tensor, method: str, h: Sequence[float], T: float):
    """(offsets, nodes [B] each, derivative weights [B] each, whether any node was shifted)."""
    if method not in STENCILS:
        raise ValueError(
            f"unknown time-derivative method dt={method!r}; choose 'jvp' or one of {sorted(STENCILS)}"
        )
    offsets = STENCILS[method](tuple(h))
    if min(h) <= 0 or max(offsets) - min(offsets) > T:
        raise ValueError(f"finite-difference steps must be positive and fit in [0, {T}], got h={tuple(h)}")
    # Where a node would fall below t = 0, the steps shrink to STEP_FRACTION·t instead of the
    # stencil shifting inwards: near t = 0 the marginal changes on the scale of t itself
    # (σ_t ~ √t under VP and VE). Elsewhere the steps are as given. They shrink by at most
    # √ε of the dtype: below that the nodes differ by less than the score can resolve (the
    # round-off grows like ε/(r·h), and the weights ∝ 1/(r·h) overflow to ∞·0 = NaN near
    # t ≈ 1e-300), so for 0 < t < 8√ε·h the stencil keeps its steps and shifts inwards, as at t = 0.
    reach = max(abs(o) for o in offsets)
    r = STEP_FRACTION * t / reach
    r_min = torch.finfo(t.dtype).eps ** 0.5 if t.is_floating_point() else 0.0
    shrink = (t < -min(offsets)) & (r >= r_min)
    r = torch.where(shrink, r, torch.ones_like(t))
    c = torch.minimum(torch.maximum(t, -min(offsets) * r), T - max(offsets) * r)  # shifts near 0, T
    nodes = [c + o * r for o in offsets]
    return offsets, nodes, _lagrange_derivative_weights(t, nodes), bool((c != t).any())


@renamed_keywords(method="dt")
def stencil_points(
    t: torch.Tensor, dt: str = "fd3", *, h: Sequence[float] = PAPER_STEPS, T: float = 1.0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The times and weights of a finite-difference stencil ``dt``: ∂t s(x, t) ≈ Σ_i w_i s(x, t_i).

    Returns ``(times, weights)``, lists of ``[B]`` tensors, keeping only nodes with a nonzero
    weight, so a caller can put the stencil in a batched forward of its own.
    """
    _, nodes, weights, _ = _stencil(t, dt, h, T)
    keep = [i for i, w in enumerate(weights) if bool((w != 0).any())]
    return [nodes[i] for i in keep], [weights[i] for i in keep]


def time_steps(score: Score, h="auto", dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """The steps (h_s, h_d) of a stencil in t for ``score``.

    ``h`` as given, or for ``h="auto"`` from how the score sees time: a score that says how
    fast its fastest time feature turns (``score.time_rate()``, radians per unit t: the
    ``scorepde.typing.TimeConditioned`` protocol, as ``scorepde.nn.ScoreModel`` follows) gets h_s = h_d = φ / rate, φ = ``FD_PHASE[dtype]``
    (equal steps: the fd3 stencil is then the central one, whose round-off is lower than
    with h_d = h_s/2); any other callable gets ``PAPER_STEPS``. A score whose time features
    are computed in a lower precision than x says so as ``score.time_dtype`` (diffusers'
    step embedding is float32 whatever x is), and φ follows that dtype.
    """
    if isinstance(h, str):
        if h != "auto":
            raise ValueError(f"h must be (h_s, h_d) or 'auto', got {h!r}")
        rate, time_dtype = time_conditioning(score)
        if not rate:
            return PAPER_STEPS
        dtype = time_dtype or dtype
        step = FD_PHASE.get(dtype, FD_PHASE[torch.float32]) / rate
        return (step, step)
    return tuple(h)


@renamed_keywords(method="dt")
def time_derivative(
    score: Score,
    x: torch.Tensor,
    t: torch.Tensor,
    dt: str = "jvp",
    *,
    h: Sequence[float] = PAPER_STEPS,
    T: float = 1.0,
    center: torch.Tensor | None = None,
) -> torch.Tensor:
    """∂t s(x, t), shaped like x.

    ``"jvp"`` is exact (one forward-mode pass). ``"fd3"`` is the paper's asymmetric
    3-point stencil (App. C.1) with ``h = (h_s, h_d)``; ``"central"`` uses ``h[0]`` both ways;
    ``"forward"`` is one-sided with ``h[0]``, first order (O(h)), one node beside t.
    ``h="auto"`` takes the steps from the score's time conditioning (``time_steps``).
    The first two are O(h²). Nodes stay inside [0, T]: where a node would fall below 0
    (0 < t < h_s) the steps shrink to ``STEP_FRACTION``·t (the marginal changes on the scale
    of t there, but by at most √ε of the dtype); at t = 0 itself (and below 8√ε·h_s) and near T the stencil shifts inwards and the interpolant is
    differentiated at t, which keeps the stencil's order. ``center``
    may pass s(x, t) when the caller already has it, saving one evaluation.
    """
    if dt == "jvp":
        return jvp(lambda tt: score(x, tt), (t,), (torch.ones_like(t),))[1]
    offsets, nodes, weights, shifted = _stencil(t, dt, time_steps(score, h, x.dtype), T)
    needed = [i for i, w in enumerate(weights) if bool((w != 0).any())]
    reuse = None
    if center is not None and not shifted and 0.0 in offsets:
        reuse = offsets.index(0.0)
    evals = [i for i in needed if i != reuse]
    values = {}
    if evals:  # one batched forward for all stencil points
        B = x.shape[0]
        out = score(x.repeat((len(evals),) + (1,) * (x.dim() - 1)), torch.cat([nodes[i] for i in evals]))
        values = dict(zip(evals, out.split(B)))
    if reuse is not None and reuse in needed:
        values[reuse] = center
    return sum(broadcast_to_batch(weights[i], x) * values[i] for i in needed)


# ---------------------------------------------------------------------------------------
# div_x fn(x) and the Jacobian
# ---------------------------------------------------------------------------------------


def _basis(x: torch.Tensor) -> torch.Tensor:
    """The D unit vectors, each repeated over the batch: ``[D, B, ...]``."""
    D = x[0].numel()
    eye = torch.eye(D, dtype=x.dtype, device=x.device)
    return eye.reshape((D, 1) + tuple(x.shape[1:])).expand((D,) + tuple(x.shape))


def _trace_vectors(x, div, probes, n_probes, probe, generator) -> torch.Tensor:
    """The vectors v whose vᵀJv add up to the trace: D unit vectors (``"exact"``) or
    Hutchinson probes ``[M, B, ...]`` (the given ``probes`` or ``n_probes`` fresh ones)."""
    if div == "exact":
        return _basis(x)
    if div == "hutchinson":
        return probes if probes is not None else sample_probes(x, n_probes, probe, generator)
    raise ValueError(f"unknown divergence method {div!r}; choose div='exact' or 'hutchinson'")


@renamed_keywords(method="div")
def divergence(
    fn: Field,
    x: torch.Tensor,
    div: str = "exact",
    *,
    probes: torch.Tensor | None = None,
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    mode: str = "forward",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """div_x fn(x) = tr(∂fn/∂x) per sample, shape ``[B]``.

    ``"exact"``: D batched Jacobian-vector products (fine for small D; ``chunk_size``
    bounds memory). ``"hutchinson"``: (1/M) Σ_m v_mᵀ (∂fn/∂x) v_m with E[v vᵀ] = I
    (App. C.2), using the given ``probes`` ``[M, B, ...]`` or ``n_probes`` fresh ones.
    ``mode`` picks how each vᵀJv is formed: ``"forward"`` (J v, a jvp) or ``"reverse"``
    (vᵀ J, a vjp, as the paper's code does).
    """
    x = x.contiguous()  # jvp refuses primals whose elements alias (expanded views)
    V = _trace_vectors(x, div, probes, n_probes, probe, generator)

    if mode not in ("forward", "reverse"):
        raise ValueError(f"unknown divergence mode {mode!r}; choose 'forward' or 'reverse'")

    def quadratic_form(v):
        Jv = jvp(fn, (x,), (v,))[1] if mode == "forward" else vector_jacobian(fn, x, v)
        return (Jv * v).flatten(1).sum(1)

    if V.shape[0] == 1:
        total = quadratic_form(V[0])
    else:
        total = vmap(quadratic_form, chunk_size=chunk_size)(V).sum(0)
    return total if div == "exact" else total / V.shape[0]


@renamed_keywords(method="div")
def value_and_divergence(
    fn: Field,
    x: torch.Tensor,
    div: str = "exact",
    *,
    probes: torch.Tensor | None = None,
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(x), div_x fn(x)) from one forward pass: the value, detached, and ``[B]``.

    The same estimate as ``divergence(fn, x, div, mode="reverse")`` with the same probes
    (D unit vectors for ``"exact"``), but every vᵀ(∂fn/∂x) is an ordinary ``autograd.grad``
    on the graph of a single forward whose output is returned too, for callers that need
    fn(x) as well (the probability-flow ODE). No graph is kept.
    """
    V = _trace_vectors(x, div, probes, n_probes, probe, generator)
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        out = fn(xr)
        total = torch.zeros(x.shape[0], dtype=out.dtype, device=out.device)
        for i in range(V.shape[0]):
            # a scalar ⟨out, v⟩ rather than grad_outputs=v: the latter's shape check imports
            # torch.fx's symbolic shapes (and sympy) on first use, ~1–2 s of a fresh process
            vJ = torch.autograd.grad((out * V[i]).sum(), xr, retain_graph=i < V.shape[0] - 1)[0]
            total = total + (vJ * V[i]).flatten(1).sum(1)
    return out.detach(), total if div == "exact" else total / V.shape[0]


def value_and_stacked_divergence(fn: Field, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(x), tr ∂fn/∂x) exactly, ``[B]``, from one forward on D stacked copies of x and
    one backward: copy k (rows k·B … k·B + B − 1) carries e_k, so Σ_k e_kᵀ (∂fn/∂x) e_k is one vjp.

    The same numbers as ``value_and_divergence(fn, x, "exact")``, which makes D backward
    passes on one forward; for a small model the cost is per-call dispatch, not arithmetic,
    so one call on D·B rows is cheaper (the 2-D mixture, 64 points: 0.41 against 0.51 ms an evaluation).
    ``fn`` gets ``[D·B, ...]`` rows (x repeated D times, the copies one after another) and
    must treat its other inputs accordingly (repeat a per-sample t D times).
    """
    B, D = x.shape[0], x[0].numel()
    with torch.enable_grad():
        xr = x.detach().repeat(D, *([1] * (x.dim() - 1))).requires_grad_(True)
        out = fn(xr)
        # Σ_k ⟨out of copy k, e_k⟩: the diagonal of out seen as [copy k, sample, component]
        picked = out.reshape(D, B, D).diagonal(dim1=0, dim2=2).sum()
        g = torch.autograd.grad(picked, xr)[0]
    return out[:B].detach(), g.reshape(D, B, D).diagonal(dim1=0, dim2=2).sum(-1)


def hutchpp_divergence(
    fn: Field,
    x: torch.Tensor,
    n_matvecs: int = 3,
    *,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """div_x fn(x) per sample ``[B]`` by Hutch++ (Meyer et al. 2021) with m = ``n_matvecs``
    Jacobian-vector products, m a multiple of 3, k = m/3:

        Q = orth(J S),  S: k probes      tr J ≈ tr(Qᵀ J Q) + (1/k) Σ_i g_iᵀ (I − QQᵀ) J (I − QQᵀ) g_i

    exact on the span of the sketch, Hutchinson on the rest: unbiased, and of lower variance
    than m Hutchinson probes when J's spectrum decays (it is the same price in matvecs).
    """
    if n_matvecs < 3 or n_matvecs % 3:
        raise ValueError(
            f"Hutch++ splits its matvecs in three equal parts: n_matvecs must be a "
            f"multiple of 3, got {n_matvecs}"
        )
    x = x.contiguous()
    k = n_matvecs // 3
    S, G = sample_probes(x, 2 * k, probe, generator).split(k)
    Jv = lambda V: vmap(lambda v: jvp(fn, (x,), (v,))[1])(V)  # [k, B, ...]
    Q = torch.linalg.qr(Jv(S).flatten(2).permute(1, 2, 0)).Q  # [B, D, k]
    Qv = Q.permute(2, 0, 1).reshape(S.shape)  # [k, B, ...]
    low_rank = (Jv(Qv) * Qv).flatten(2).sum(2).sum(0)
    Gf = G.flatten(2).permute(1, 2, 0)  # [B, D, k]
    Gp = (Gf - Q @ (Q.transpose(1, 2) @ Gf)).permute(2, 0, 1).reshape(G.shape)
    return low_rank + (Jv(Gp) * Gp).flatten(2).sum(2).sum(0) / k


def jacobian(fn: Field, x: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """Per-sample Jacobian J[b, i, j] = ∂fn_i/∂x_j of the flattened field, ``[B, D, D]``."""
    x = x.contiguous()
    columns = vmap(lambda v: jvp(fn, (x,), (v,))[1], chunk_size=chunk_size)(_basis(x))  # [D(j), B, ...]
    return columns.flatten(2).permute(1, 2, 0)


def vector_jacobian(fn: Field, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """vᵀ ∂fn/∂x per sample (reverse mode), shaped like x."""
    return vjp(fn, x)[1](v)[0]
