"""Bits per dimension: the dequantization offset against densities whose bpd is known exactly."""

import math

import pytest
import torch

import scorepde as sp
from scorepde.bpd import bits_per_dim, dequantize, evaluate_bpd

SCALINGS = {"[0,1]": (1.0, 0.0), "[-1,1]": (2.0, -1.0), "[-8,8]": (16.0, -8.0)}


def _data(levels, shape=(64, 3, 4, 4), seed=0):
    return torch.randint(0, levels, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("levels", [17, 256])
@pytest.mark.parametrize("scaling", sorted(SCALINGS))
def test_uniform_density_gives_log2_levels(levels, scaling):
    """p_x uniform on the image of [0, 1)^D (log p_x = −D log a) puts mass L^−D on every k."""
    a, b = SCALINGS[scaling]
    k = _data(levels)
    u = dequantize(k, levels, torch.Generator().manual_seed(1), dtype=torch.float64)
    x = a * u + b
    assert (x >= b).all() and (x < a + b).all()
    D = k[0].numel()
    log_px = torch.full((k.shape[0],), -D * math.log(a), dtype=torch.float64)
    bpd = bits_per_dim(log_px, D, levels, a)
    torch.testing.assert_close(bpd, torch.full_like(bpd, math.log2(levels)), rtol=0, atol=1e-12)


def test_score_sde_offset():
    """score_sde's 7 − inverse_scaler(−1) is −log2 a + log2 256: 8 on [0, 1], 7 on [−1, 1]."""
    zero = torch.zeros(1, dtype=torch.float64)
    assert bits_per_dim(zero, 10, 256, 1.0).item() == 8.0
    assert bits_per_dim(zero, 10, 256, 2.0).item() == 7.0
    assert bits_per_dim(zero, 10, 17, 2.0).item() == pytest.approx(math.log2(17) - 1)


@pytest.mark.parametrize("levels", [17, 256])
@pytest.mark.parametrize("scaling", sorted(SCALINGS))
def test_histogram_density_is_exact(levels, scaling):
    """A density constant on each bin makes the bound tight: bpd = −Σ_d log2 P(k_d) / D.

    Per dimension P is a random pmf over the levels; p_u(u) = L·P(⌊L u⌋) and
    p_x(x) = p_u((x − b)/a)/a. Checks dequantize (u stays in k's bin) and every sign.
    """
    a, b = SCALINGS[scaling]
    g = torch.Generator().manual_seed(2)
    pmf = torch.rand(levels, generator=g, dtype=torch.float64) + 0.05
    pmf = pmf / pmf.sum()
    k = torch.multinomial(pmf, 8 * 12, replacement=True, generator=g).view(8, 12)
    x = a * dequantize(k, levels, g, dtype=torch.float64) + b
    bins = torch.floor(levels * (x - b) / a).long()
    assert torch.equal(bins, k)
    D = k.shape[1]
    log_px = (torch.log(levels * pmf[bins]) - math.log(a)).sum(1)
    expected = -torch.log2(pmf[k]).sum(1) / D
    torch.testing.assert_close(bits_per_dim(log_px, D, levels, a), expected, rtol=0, atol=1e-12)


def test_bound_holds_for_a_smooth_density():
    """For a Gaussian p_x on [−1, 1) (D = 1) the dequantized bpd bounds the exact discrete bpd
    from above, within a small gap (Jensen), estimated over 20000 draws of U."""
    levels, a, b, sigma = 17, 2.0, -1.0, 0.4
    k = torch.arange(levels).repeat(20000)[:, None]
    x = a * dequantize(k, levels, torch.Generator().manual_seed(3), dtype=torch.float64) + b
    normal = torch.distributions.Normal(0.0, sigma)
    bound = bits_per_dim(normal.log_prob(x)[:, 0], 1, levels, a).view(-1, levels).mean(0)
    edges = a * torch.arange(levels + 1, dtype=torch.float64) / levels + b
    cdf = normal.cdf(edges)
    exact = -torch.log2(cdf[1:] - cdf[:-1])
    gap = bound - exact
    assert (gap > -0.01).all() and (gap < 0.1).all(), gap


def test_dequantize_range_and_refusals():
    u = dequantize(torch.tensor([[0, 16]], dtype=torch.uint8), 17)
    assert u.dtype == torch.float32 and (u >= 0).all() and (u < 1).all()
    with pytest.raises(ValueError, match=r"levels=17.*max 17"):
        dequantize(torch.tensor([[0, 17]]), 17)
    with pytest.raises(ValueError, match=r"levels=256.*min -1"):
        dequantize(torch.tensor([[-1, 3]]), 256)
    with pytest.raises(ValueError, match="levels=256.*fractional"):
        dequantize(torch.tensor([[0.0, 0.5]]), 256)
    with pytest.raises(ValueError, match=r"levels=256.*max 1\.5"):  # images already in [0, 1]
        evaluate_bpd(lambda x, t: x, sp.VPSDE(), torch.tensor([[0.0, 1.5]]), 256, 2.0, -1.0)
    with pytest.raises(ValueError, match="scale must be positive"):
        bits_per_dim(torch.zeros(1), 2, 256, -2.0)


@pytest.mark.parametrize("sde", [sp.VPSDE(beta_max=30.0), sp.VESDE(sigma_max=40.0)], ids=["vp", "ve"])
def test_evaluate_bpd_end_to_end(sde):
    """GMM score under VP (β_max = 30, prior mismatch < 4e-3 nats) and VE (σ_max = 40), each
    with its default clock and error norm (``bpd_solver_defaults``), exact trace: each
    repeat's bpd matches the closed form on the same dequantization noise to 2e-3 bits."""
    gmm = sp.GaussianMixture(means=[[-4.0, -4.0], [4.0, 3.0]], stds=[0.8, 1.3], weights=[0.3, 0.7])
    model = lambda x, t: gmm.score(x, t, sde)
    levels, a, b, eps = 17, 16.0, -8.0, 1e-5
    x0 = gmm.sample(48, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    k = torch.floor(levels * (x0 - b) / a).clamp(0, levels - 1).long()
    out = evaluate_bpd(
        model,
        sde,
        k,
        levels,
        a,
        b,
        repeats=2,
        div="exact",
        eps=eps,
        generator=torch.Generator().manual_seed(5),
        batch_size=32,
        dtype=torch.float64,
    )
    g = torch.Generator().manual_seed(5)
    expected = []
    for _ in range(2):
        xs = [a * dequantize(kb, levels, g, dtype=torch.float64) + b for kb in k.split(32)]
        closed = gmm.log_prob(torch.cat(xs), torch.full((48,), eps, dtype=torch.float64), sde)
        expected.append(bits_per_dim(closed, 2, levels, a).mean().item())
    assert out["per_repeat"] == pytest.approx(expected, abs=2e-3)
    assert out["bpd"] == pytest.approx(sum(expected) / 2, abs=2e-3)
    assert out["bpd_std"] > 0 and out["nfe"] > 10
    # the two repeats differ by dequantization noise, more than the tolerance above
    assert abs(expected[0] - expected[1]) > 5e-3


def _gmm_bpd_setup(n=24, sde=None):
    gmm = sp.GaussianMixture(means=[[-4.0, -4.0], [4.0, 3.0]], stds=[0.8, 1.3], weights=[0.3, 0.7])
    sde = sp.VPSDE(beta_max=30.0) if sde is None else sde
    levels, a, b = 17, 16.0, -8.0
    x0 = gmm.sample(n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    k = torch.floor(levels * (x0 - b) / a).clamp(0, levels - 1).long()
    return (lambda x, t: gmm.score(x, t, sde)), sde, k, levels, a, b


def test_evaluate_bpd_reports_points_repeats_time_and_stderr():
    """stderr = std over samples of their repeat-means / √n; bpd = mean of per_sample."""
    model, sde, k, levels, a, b = _gmm_bpd_setup()
    out = evaluate_bpd(
        model,
        sde,
        k,
        levels,
        a,
        b,
        repeats=2,
        div="exact",
        batch_size=10,
        generator=torch.Generator().manual_seed(5),
        dtype=torch.float64,
    )
    per_sample = torch.tensor(out["per_sample"], dtype=torch.float64)
    assert out["points"] == 24 and out["repeats"] == 2 and out["solves"] == 6 and out["seconds"] > 0
    assert out["bpd"] == pytest.approx(per_sample.mean().item(), abs=1e-12)
    assert out["bpd"] == pytest.approx(sum(out["per_repeat"]) / 2, abs=1e-12)
    assert out["bpd_stderr"] == pytest.approx(per_sample.std().item() / 24**0.5, rel=1e-12)
    assert out["bpd_stderr"] > 0


@pytest.mark.parametrize(
    "order,batch_size", [("sorted", 4), pytest.param("given", 1, marks=pytest.mark.slow), ("given", 12)]
)
def test_evaluate_bpd_orders_and_chunks_give_the_same_answer(order, batch_size):
    """Sorting by difficulty, chunking and per-sample solves change only the solver's error:
    each sample's bpd agrees with the in-order chunked solve to 1e-3 bits (tol 1e-6), on the
    same dequantization noise, and each sample lands back in its own place."""
    model, sde, k, levels, a, b = _gmm_bpd_setup(12)
    kw = dict(repeats=1, div="exact", dtype=torch.float64, rtol=1e-6, atol=1e-6)
    ref = evaluate_bpd(
        model, sde, k, levels, a, b, batch_size=4, generator=torch.Generator().manual_seed(5), **kw
    )
    out = evaluate_bpd(
        model,
        sde,
        k,
        levels,
        a,
        b,
        batch_size=batch_size,
        order=order,
        generator=torch.Generator().manual_seed(5),
        **kw,
    )
    diff = (torch.tensor(out["per_sample"]) - torch.tensor(ref["per_sample"])).abs()
    assert diff.max() < 1e-3
    assert torch.tensor(ref["per_sample"]).std() > 0.1  # a permutation mix-up would show


def test_evaluate_bpd_refuses_unknown_order():
    model, sde, k, levels, a, b = _gmm_bpd_setup(4)
    with pytest.raises(ValueError, match="unknown order"):
        evaluate_bpd(model, sde, k, levels, a, b, repeats=1, order="hardest")


def _default_and(sde=None, **other):
    """evaluate_bpd at tol 1e-8 on the same draws, with its default solver keywords and with
    ``other``: the largest per-sample difference in bits, and whether the NFE differ."""
    model, sde, k, levels, a, b = _gmm_bpd_setup(12, sde)
    kw = dict(repeats=1, div="exact", dtype=torch.float64, rtol=1e-8, atol=1e-8)
    run = lambda **extra: evaluate_bpd(
        model, sde, k, levels, a, b, generator=torch.Generator().manual_seed(5), **kw, **extra
    )
    default, changed = run(), run(**other)
    diff = (torch.tensor(default["per_sample"]) - torch.tensor(changed["per_sample"])).abs()
    return float(diff.max()), default["nfe"] != changed["nfe"]


def test_evaluate_bpd_default_clock_matches_the_t_clock():
    """evaluate_bpd solves in σ by default for VP (``bpd_clock``): the same bits/dim as the
    t clock it replaces, per sample to 1e-5 bits at tol 1e-8; t for VE (1.6× fewer rows on the
    VE digits U-Net), sub-VP and the others."""
    from scorepde.time_change import bpd_clock

    diff, other_steps = _default_and(time="t")
    assert diff < 1e-5 and other_steps  # another clock, the same answer
    assert bpd_clock(sp.VPSDE()) == "sigma" and bpd_clock(sp.VESDE()) == bpd_clock(sp.SubVPSDE()) == "t"


def test_evaluate_bpd_ve_default_norm_matches_the_balanced_norm():
    """Under VE evaluate_bpd measures the error on every component alike (``error_on="state"``):
    the same bits/dim as the balanced norm it replaces, per sample to 1e-5 bits at tol 1e-8."""
    diff, other_steps = _default_and(sp.VESDE(sigma_max=40.0), error_on="balanced")
    assert diff < 1e-5 and other_steps  # another norm, the same answer
