"""Toy-lab library pieces: data sets, σ_max from data, the Cauchy loss, metrics, plotting."""

import math
from pathlib import Path

import pytest
import torch

import scorepde as sp
from scorepde import plotting
from scorepde.cauchy import RESIDUAL_WEIGHTINGS, CauchyObjective, cauchy_loss, residual_weight
from scorepde.metrics import cross_entropy, curl_mse, nll, relative_score_error
from scorepde.toy import TOY_DATASETS, ToyScore, checkerboard_log_prob, sigma_max_from_data, toy_dataset


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_datasets_sample_and_reproduce(name):
    ds = toy_dataset(name)
    x = ds.sample(101, gen(1))
    assert x.shape == (101, ds.dim) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, ds.sample(101, gen(1)))
    if ds.log_prob is not None:
        assert torch.isfinite(ds.log_prob(x)).all()  # samples lie on the support
    lo, hi = ds.extent
    assert ((x > lo) & (x < hi)).float().mean() > 0.95


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="checkerboard"):
        toy_dataset("checkers")


def test_mixtures_match_the_listings():
    g2 = toy_dataset("gmm2").mixture
    assert torch.allclose(g2.means, torch.tensor([[-5.0, -5.0], [5.0, 5.0]], dtype=torch.float64))
    g8 = toy_dataset("gmm8").mixture
    assert torch.allclose(g8.means.norm(dim=1), torch.ones(8, dtype=torch.float64))
    assert torch.allclose(g8.stds, torch.full((8,), 0.1, dtype=torch.float64))
    g1 = toy_dataset("gmm1d").mixture
    assert torch.allclose(g1.weights, torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64))


def test_checkerboard_density_integrates_to_one():
    u = torch.rand(200_000, 2, generator=gen(2)) * 8 - 4  # uniform on [-4, 4]², area 64
    p = checkerboard_log_prob(u).exp()
    assert abs(float(p.mean()) * 64 - 1.0) < 0.02
    assert cross_entropy(
        checkerboard_log_prob, toy_dataset("checkerboard").sample(500, gen(3))
    ) == pytest.approx(math.log(32.0))


def test_toy_score_is_reexported_from_precond():
    from scorepde.nn.precond import ToyScore as Precond

    assert ToyScore is Precond


def test_sigma_max_from_data_is_the_largest_pairwise_distance():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    assert sigma_max_from_data(x) == pytest.approx(5.0)
    assert sigma_max_from_data(x.reshape(3, 1, 2)) == pytest.approx(5.0)  # flattened per sample
    with pytest.raises(ValueError):
        sigma_max_from_data(x[:1])
    # the unit-circle mixture: diameter 2 plus a few component stds
    s = sigma_max_from_data(toy_dataset("gmm8").sample(2000, gen(2)))
    assert 2.0 < s < 3.2


@pytest.mark.parametrize("weighting", sorted(RESIDUAL_WEIGHTINGS))
def test_cauchy_loss_vanishes_for_the_true_score(weighting):
    sde, gmm = sp.VESDE(), toy_dataset("gmm2").mixture
    x0 = gmm.sample(64, generator=gen(4), dtype=torch.float64)
    t = torch.rand(64, generator=gen(5), dtype=torch.float64)
    xt = sde.perturb(x0, t, torch.randn(x0.shape, generator=gen(6), dtype=torch.float64))
    loss, parts = cauchy_loss(
        lambda x, tt: gmm.score(x, tt, sde),
        sde,
        xt,
        t,
        lambda x: gmm.score(x),
        x0,
        weighting=weighting,
        validate=True,
    )
    assert float(parts["init"]) < 1e-20
    assert float(parts["residual"]) < 1e-12 and float(loss) < 1e-12


def test_cauchy_objective_trains_a_network():
    sde, ds = sp.VESDE(), toy_dataset("gmm2")
    from scorepde.nn import MLPScore

    net = MLPScore(2, hidden=16, depth=2, fourier_scale=1.0)
    model = ToyScore(net, sde, data_std=1.0)
    obj = CauchyObjective(model, sde, lambda x: ds.mixture.score(x))
    loss, parts = obj(ds.sample(32, gen(7)), gen(8))
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {"residual", "init"}
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    with pytest.raises(ValueError, match="scaled"):
        residual_weight("bogus", sde, torch.ones(1))
    with pytest.raises(ValueError):
        CauchyObjective(model, sde, lambda x: x, init_points="everywhere")


def test_metrics_on_the_closed_form():
    sde, gmm = sp.VESDE(), toy_dataset("gmm2").mixture
    true = lambda x, t: gmm.score(x, t, sde)
    x0 = gmm.sample(200, generator=gen(9), dtype=torch.float64)
    ts = [1e-5, 0.5, 1.0]
    rel = relative_score_error(true, true, sde, x0, ts, generator=gen(10))
    assert rel["t"] == ts and rel["mean"] == 0.0
    half = relative_score_error(lambda x, t: 0.5 * true(x, t), true, sde, x0, ts, generator=gen(10))
    assert half["rel_l2"] == pytest.approx([0.5] * 3)
    c = curl_mse(true, sde, x0, ts, generator=gen(11))
    assert max(c["curl_mse"]) < 1e-20


def test_nll_of_the_true_score_matches_the_cross_entropy():
    """The PF-ODE likelihood of the closed-form score is the data's own log-density."""
    sde = sp.VESDE(0.01, 50.0)
    gmm = toy_dataset("gmm8").mixture
    x = gmm.sample(16, generator=gen(12), dtype=torch.float64)
    got = nll(lambda y, t: gmm.score(y, t, sde), sde, x, 1e-5, batch_size=8, rtol=1e-6, atol=1e-6)
    assert got.shape == (16,)
    assert float(got.mean()) == pytest.approx(cross_entropy(gmm.log_prob, x), abs=0.02)


def test_nll_raises_on_a_failed_solve_unless_asked_for_nan(monkeypatch):
    """By default a failed PF-ODE solve is an error; ``nan_on_failure`` narrows it to the
    failing points and returns NaN only there."""
    import scorepde.metrics

    def fake_log_likelihood(model, sde, x, eps, **kw):
        if (x[:, 0] > 0).any():
            raise ValueError("the ODE solve failed")
        return x[:, 0]

    monkeypatch.setattr(scorepde.metrics, "log_likelihood", fake_log_likelihood)
    x = torch.linspace(-1, 1, 9).unsqueeze(1)
    with pytest.raises(ValueError, match="failed"):
        nll(None, None, x, batch_size=4)
    got = nll(None, None, x, batch_size=4, nan_on_failure=True)
    assert torch.equal(got.isnan(), x[:, 0] > 0)
    assert torch.equal(got[~got.isnan()], -x[x[:, 0] <= 0, 0])


def test_plotting_writes_pngs(tmp_path):
    grid = plotting.grid_points((-1.0, 1.0), 5)
    assert grid.shape == (25, 2) and torch.equal(grid[1], torch.tensor([-0.5, -1.0]))
    z = grid.pow(2).sum(1).reshape(5, 5)
    paths = [
        plotting.heatmaps({"a": z, "b": 2 * z}, (-1, 1), str(tmp_path / "h.png")),
        plotting.scatters({"a": grid}, (-1, 1), str(tmp_path / "s.png")),
        plotting.curves([0, 1], {"a": [1.0, 0.0]}, str(tmp_path / "c.png"), ylabel="y"),
        plotting.densities_1d(torch.arange(3.0), {"p": torch.ones(3)}, str(tmp_path / "d.png")),
    ]
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert plotting.histogram_density(grid, (-1, 1), 4).shape == (4, 4)


@pytest.mark.parametrize("sde", [sp.VESDE(), sp.VPSDE(), sp.SubVPSDE()], ids=["ve", "vp", "subvp"])
@pytest.mark.parametrize("data_std", [1.0, 5.0])
def test_collocation_times(sde, data_std):
    """Both halves lie in [0, T]; the log-scale half follows c(t) = log(ŝ/a), uniformly in c."""
    from scorepde.cauchy import _log_relative_scale, sample_collocation_time

    t = sample_collocation_time(4000, sde, "log_scale", data_std=data_std, generator=gen(13))
    assert t.shape == (4000,) and torch.isfinite(t).all()
    assert float(t.min()) >= 0 and float(t.max()) <= sde.T
    assert 0.4 < float((t[:2000] > 0.5).float().mean()) < 0.6
    tc = t[2000:].double()
    assert float((tc == 0).float().mean()) < 0.01  # (VP, std 1 put half of them at 0)
    # Uniform in c: the quartiles of c(t_c) sit at the quartiles of [c(0), c(T)].
    ends = _log_relative_scale(sde, torch.tensor([0.0, sde.T], dtype=torch.float64), data_std)
    frac = (_log_relative_scale(sde, tc, data_std) - ends[0]) / (ends[1] - ends[0])
    assert torch.allclose(
        frac.quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)),
        torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64),
        atol=0.04,
    )
    with pytest.raises(ValueError, match="log_scale"):
        sample_collocation_time(4, sde, "beta")


def test_collocation_times_under_vp_spend_points_where_the_noise_passes_the_data():
    """Regression (issue 9, defect 1): log ŝ is not increasing under VP/sub-VP, so searchsorted
    on it gave t = 0 for half the points (VP, std 1), ±8e299 (VP, std 5) and t > T (sub-VP)."""
    from scorepde.cauchy import sample_collocation_time

    for sde, d in ((sp.VPSDE(), 1.0), (sp.VPSDE(), 5.0), (sp.SubVPSDE(), 1.0)):
        tc = sample_collocation_time(2000, sde, "log_scale", data_std=d, generator=gen(14))[1000:]
        assert float(tc.min()) > 0 and float(tc.max()) <= sde.T
        # σ_t/a(t) passes the data scale d inside (0.1, 0.6) for these; most points lie beyond.
        assert float((tc > 0.1).float().mean()) > 0.8
    # ... and VE keeps its behaviour: the log-ŝ half sits at t > 0.5 under VE(0.01, 50).
    tc = sample_collocation_time(4000, sp.VESDE(), "log_scale", data_std=1.0, generator=gen(13))[2000:]
    assert float((tc > 0.5).float().mean()) > 0.9
    with pytest.raises(ValueError, match="uniform"):
        sample_collocation_time(4, sp.GenericSDE(lambda x, t: 0 * x, lambda t: 1 + 0 * t), "log_scale")
