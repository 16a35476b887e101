"""Adapters: diffusers and EDM-style models as (score, SDE), held to the schedulers' own numbers."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.func import jvp

import scorepde as sp

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("tiny_diffusers", ROOT / "examples" / "tiny_diffusers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCHEDULES = ["linear", "squaredcos_cap_v2"]
PREDICTIONS = ["epsilon", "v_prediction", "sample"]


# -- SDEs ------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_discrete_vp_matches_alphas_cumprod_at_every_step(schedule):
    diffusers = pytest.importorskip("diffusers")
    ac = diffusers.DDPMScheduler(beta_schedule=schedule).alphas_cumprod.double()
    sde = sp.DiscreteVPSDE(ac)
    k = torch.arange(len(ac))
    a, std = sde.marginal(sde.time(k))
    torch.testing.assert_close(a, ac.sqrt(), rtol=1e-3, atol=0)
    torch.testing.assert_close(std, (1 - ac).sqrt(), rtol=1e-3, atol=0)
    torch.testing.assert_close(sde.timestep(sde.time(k)), k.double())
    # a plain VPSDE on the same time map is not close enough (the 5%)
    plain = sp.VPSDE().marginal(sde.time(k))[1]
    assert ((plain - (1 - ac).sqrt()).abs() / (1 - ac).sqrt()).max() > 1e-2


def test_discrete_vp_kernel_solves_its_sde():
    """da/dt = c a and dσ²/dt = 2cσ² + g² between the nodes; β ≥ 0 (monotone interpolant)."""
    betas = torch.linspace(1e-4, 0.02, 50, dtype=torch.float64)
    sde = sp.DiscreteVPSDE(torch.cumprod(1 - betas, 0))
    t = torch.rand(200, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (a, var), (da, dvar) = jvp(
        lambda s: (sde.marginal(s)[0], sde.marginal_variance(s)), (t,), (torch.ones_like(t),)
    )
    c, g = sde.drift_coeff(t), sde.diffusion(t)
    torch.testing.assert_close(da, c * a)
    torch.testing.assert_close(dvar, 2 * c * var + g**2)
    assert bool((sde.beta(torch.linspace(0, 1, 5001, dtype=torch.float64)) > 0).all())
    assert torch.isclose(
        sde.marginal(torch.zeros(1, dtype=torch.float64))[0], torch.ones(1, dtype=torch.float64)
    )


def test_edm_sde_kernel_solves_its_sde():
    sde = sp.EDMSDE()
    t = torch.linspace(0.01, sde.T, 40, dtype=torch.float64)
    (a, std), (da, dstd) = jvp(sde.marginal, (t,), (torch.ones_like(t),))
    torch.testing.assert_close(2 * std * dstd, 2 * sde.drift_coeff(t) * std**2 + sde.diffusion(t) ** 2)
    assert torch.equal(std, t) and torch.equal(da, torch.zeros_like(t))


@pytest.mark.parametrize(
    "sde",
    [sp.DiscreteVPSDE(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)), sp.EDMSDE()],
    ids=["discrete_vp", "edm"],
)
def test_true_score_solves_the_score_fpe_of_the_new_sdes(sde, gmm2):
    """The closed-form mixture score under each new SDE has zero residual: f, g and the kernel agree."""
    x = 2 * torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = sde.T * (
        0.02 + 0.96 * torch.rand(32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    )
    score = lambda y, tt: gmm2.score(y, tt, sde)
    eps = sp.residual(score, sde, x, t)
    scale = sp.time_derivative(score, x, t).abs().max()
    assert eps.abs().max() < 1e-8 * scale


@pytest.mark.parametrize(
    "bad, match", [([0.9, 0.5, 0.0], "zero terminal SNR"), ([0.9, 0.95], "decrease"), ([0.5], "at least 2")]
)
def test_discrete_vp_refuses_unconvertible_schedules(bad, match):
    with pytest.raises(ValueError, match=match):
        sp.DiscreteVPSDE(torch.tensor(bad))


# -- from_diffusers ----------------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_diffusers_score_is_minus_eps_over_sigma(schedule, prediction):
    """At integer k, s = −ε̂/σ_k with ε̂ from the scheduler's own x̂_0 (DDPMScheduler.step)."""
    diffusers = pytest.importorskip("diffusers")
    unet = _example().tiny_unet()
    scheduler = diffusers.DDPMScheduler(beta_schedule=schedule, prediction_type=prediction, clip_sample=False)
    score, sde = sp.from_diffusers(unet, scheduler)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for k in (0, 10, 500, 999):
        with torch.no_grad(), sp.math_attention(unet):  # the same network output both ways
            out = unet(x, k).sample.double()  # the reference in float64: at k = 0
            x0 = scheduler.step(out, k, x.double()).pred_original_sample  # x → x̂_0 → ε̂ loses 1/σ_0
            ac = scheduler.alphas_cumprod[k].double()
            eps = (x.double() - ac.sqrt() * x0) / (1 - ac).sqrt()
            got = score(x, sde.time(torch.full((3,), k)).float())
        want = (-eps / (1 - ac).sqrt()).float()
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * want.abs().max().item())


def test_diffusers_learned_variance_uses_the_eps_channels():
    diffusers = pytest.importorskip("diffusers")
    unet = _example().tiny_unet(out_channels=2)
    scheduler = diffusers.DDPMScheduler(variance_type="learned_range")
    score, sde = sp.from_diffusers(unet, scheduler)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        eps = unet(x, sde.timestep(t)).sample[:, :1]
        torch.testing.assert_close(score(x, t), -eps / sde.marginal(t)[1].reshape(-1, 1, 1, 1))
    with pytest.raises(ValueError, match="shaped like x"):
        sp.from_diffusers(unet, diffusers.DDPMScheduler())[0](x, t)


def test_diffusers_refusals():
    diffusers = pytest.importorskip("diffusers")
    unet = _example().tiny_unet()
    with pytest.raises(ValueError, match="no alphas_cumprod"):
        sp.from_diffusers(unet, diffusers.FlowMatchEulerDiscreteScheduler())
    with pytest.raises(ValueError, match="zero terminal SNR"):
        sp.from_diffusers(unet, diffusers.DDPMScheduler(rescale_betas_zero_snr=True))
    with pytest.raises(ValueError, match="prediction_type 'flow'"):
        sp.from_diffusers(unet, diffusers.DDPMScheduler(prediction_type="flow"))
    classy = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        num_class_embeds=3,
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
    )
    with pytest.raises(ValueError, match="class-conditional"):
        sp.from_diffusers(classy, diffusers.DDPMScheduler())
    with pytest.raises(ValueError, match="attention"):
        sp.from_diffusers(unet, diffusers.DDPMScheduler(), attention="flash")


def test_math_attention_restores_processors_and_keeps_the_function():
    pytest.importorskip("diffusers")
    from diffusers.models.attention_processor import Attention

    unet = _example().tiny_unet()
    before = [m.processor for m in unet.modules() if isinstance(m, Attention)]
    assert before
    x, k = torch.randn(2, 1, 8, 8), torch.tensor([10.0, 700.0])
    with torch.no_grad():
        fused = unet(x, k).sample
        with sp.math_attention(unet):
            assert all(
                isinstance(m.processor, sp.autodiff.MathAttention)
                for m in unet.modules()
                if isinstance(m, Attention)
            )
            math = unet(x, k).sample
    assert [m.processor for m in unet.modules() if isinstance(m, Attention)] == before
    torch.testing.assert_close(math, fused, rtol=1e-4, atol=1e-5)
    score, sde = sp.from_diffusers(unet, __import__("diffusers").DDPMScheduler())
    score(x, torch.tensor([0.2, 0.9]))
    assert [m.processor for m in unet.modules() if isinstance(m, Attention)] == before


def test_forward_fd_agrees_with_exact_on_a_diffusers_unet():
    """The issue's must-hold: forward_fd's mean over probes is exact within its standard error."""
    diffusers = pytest.importorskip("diffusers")
    score, sde = sp.from_diffusers(_example().tiny_unet().double(), diffusers.DDPMScheduler())
    gen = torch.Generator().manual_seed(0)
    x, t = (
        torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64),
        torch.tensor([0.3, 0.7], dtype=torch.float64),
    )
    exact = sp.residual(score, sde, x, t, "exact")
    K = 160
    draws = sp.residual(
        score, sde, x.repeat(K, 1, 1, 1), t.repeat(K), "forward_fd", generator=gen, h=sde.fd_h
    )
    draws = draws.reshape(K, *x.shape)
    z = (draws.mean(0) - exact) / (draws.std(0) / K**0.5)
    assert z.abs().max() < 5, z.abs().max()
    assert 0.6 < z.pow(2).mean() < 1.5, z.pow(2).mean()
    # sharper: along ε itself, ⟨ε̂, ε/‖ε‖⟩ has mean ‖ε‖ per sample
    unit = exact / exact.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    proj = (draws * unit).flatten(2).sum(2)  # [K, B]
    zp = (proj.mean(0) - exact.flatten(1).norm(dim=1)) / (proj.std(0) / K**0.5)
    assert zp.abs().max() < 4, zp


def test_fd_steps_in_t_must_be_a_fraction_of_one_ddpm_step():
    """A UNet sees k = N t − 1: the default h = 1e-3 is a whole step and misses ∂t s by ~20%;
    the SDE's fd_h (1/20 step) is within 1%."""
    diffusers = pytest.importorskip("diffusers")
    score, sde = sp.from_diffusers(_example().tiny_unet().double(), diffusers.DDPMScheduler())
    x, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([0.3, 0.7], dtype=torch.float64)
    exact = sp.time_derivative(score, x, t)
    err = lambda h: ((sp.time_derivative(score, x, t, "central", h=h) - exact).norm() / exact.norm()).item()
    assert err(sde.fd_h) < 1e-2 < 5e-2 < err((1e-3, 1e-3))
    assert err("auto") < 1e-2  # the adapter's score says its time rate: N rad per unit t


# -- from_denoiser -------------------------------------------------------------------------


@pytest.mark.parametrize("sde", [sp.EDMSDE(), sp.VPSDE()], ids=["edm", "vp"])
def test_denoiser_of_gaussian_data_gives_the_true_score(sde):
    """D(x̂, σ̂) = s²/(s² + σ̂²) x̂ is the denoiser of N(0, s² I): the score is the closed form."""
    s2 = 0.7**2
    score, _ = sp.from_denoiser(lambda x, sigma: s2 / (s2 + sigma[:, None] ** 2) * x, sde)
    gmm = sp.GaussianMixture([[0.0, 0.0]], [0.7], [1.0])
    x = torch.randn(16, 2, dtype=torch.float64)
    t = torch.rand(16, dtype=torch.float64) * 0.9 * sde.T + 0.05 * sde.T
    torch.testing.assert_close(score(x, t), gmm.score(x, t, sde))
    assert sp.residual(score, sde, x, t).abs().max() < 1e-8 * max(1.0, score(x, t).abs().max().item())


def test_denoiser_refuses_an_sde_without_kernel():
    sde = sp.GenericSDE(lambda x, t: -x, lambda t: torch.ones_like(t))
    with pytest.raises(ValueError, match="marginal"):
        sp.from_denoiser(lambda x, s: x, sde)


# -- which estimator works on which model family (docs/own-model.md's table) -------------------------


def _families():
    """name -> (score, sde, x) for each model family of docs/own-model.md's table."""
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(2, 1, 8, 8, generator=gen)
    vp = sp.VPSDE()
    unet = sp.UNet(in_channels=1, channels=8, channel_mult=(1, 2), num_res_blocks=1, embedding="sinusoidal")
    families = {
        "scorepde `UNet` (attention)": (sp.ScoreModel(unet, vp).eval(), vp, img),
        "MLP (`MLPScore`)": (
            sp.ScoreModel(sp.MLPScore(2, hidden=16), vp).eval(),
            vp,
            torch.randn(4, 2, generator=gen),
        ),
    }
    try:
        import diffusers
    except ImportError:
        return families
    example = _example()
    score, sde = sp.from_diffusers(example.tiny_unet(), diffusers.DDPMScheduler())
    families["diffusers `UNet2DModel` via `from_diffusers`"] = (score, sde, img)
    raw = example.tiny_unet()
    by_hand = lambda x, t: -raw(x, 999 * t).sample / vp.marginal(t)[1].reshape(-1, 1, 1, 1)
    families["diffusers `UNet2DModel` wrapped by hand"] = (by_hand, vp, img)
    return families


def _outcome(score, sde, x, estimator):
    t = torch.linspace(0.3, 0.7, x.shape[0])
    try:
        eps = sp.residual(score, sde, x, t, estimator, generator=torch.Generator().manual_seed(0))
    except sp.AutodiffError as err:
        op = str(err).split(" through ")[1].split(",")[0]
        return f"ValueError ({op})"
    assert bool(torch.isfinite(eps).all()), f"{estimator} gave a non-finite residual"
    return "works"


def estimator_table() -> str:
    """docs/own-model.md's markdown table: estimator × model family × works or the refusal."""
    families = _families()
    rows = [
        "| model family | " + " | ".join(f"`{e}`" for e in sp.ESTIMATORS) + " |",
        "| --- |" + " --- |" * len(sp.ESTIMATORS),
    ]
    for name, (score, sde, x) in families.items():
        rows.append(f"| {name} | " + " | ".join(_outcome(score, sde, x, e) for e in sp.ESTIMATORS) + " |")
    return "\n".join(rows)


def test_every_estimator_works_or_says_why_and_the_readme_table_is_current():
    """No raw PyTorch error on any family; exact and forward_fd work on diffusers via from_diffusers."""
    pytest.importorskip("diffusers")
    table = estimator_table()
    print(table)
    by_hand = next(line for line in table.splitlines() if "by hand" in line)
    adapted = next(line for line in table.splitlines() if "from_diffusers" in line)
    assert "works" in by_hand and "ValueError" in by_hand
    assert adapted.count("works") == len(sp.ESTIMATORS)
    page = (ROOT / "docs" / "own-model.md").read_text()
    assert table in page, "docs/own-model.md's estimator table is stale; paste the table printed above"
