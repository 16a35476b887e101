"""scorepde.nn: shapes, the score parametrization, and the derivatives the score FPE needs
(jvp, vmap over tangents, reverse-over-forward, double backward) through tiny networks."""

import pytest
import torch
from torch import nn
from torch.func import grad, jvp, vmap

import scorepde
from scorepde.nn import MLPScore, ScoreModel, UNet
from scorepde.nn.precond import ToyScore

SDES = [scorepde.VESDE(), scorepde.VPSDE(), scorepde.SubVPSDE()]


def tiny_unet(in_channels=1, channel_mult=(1, 2), dtype=torch.float64, **kw):
    torch.manual_seed(0)
    kw = {"channels": 8, "num_res_blocks": 1, **kw}
    return UNet(in_channels, channel_mult=channel_mult, **kw).to(dtype)


def batch(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype)
    t = 0.05 + 0.9 * torch.rand(shape[0], generator=g, dtype=dtype)
    return x, t


@pytest.mark.parametrize(
    "shape, channel_mult",
    [
        ((3, 1, 8, 8), (1, 2)),
        ((3, 1, 28, 28), (1, 2, 2)),  # 28 → 14 → 7: two downsamplings divide exactly
        ((3, 1, 28, 28), (1, 2, 2, 2)),  # padded to 32 and cropped back
        ((3, 3, 32, 32), (1, 2, 2)),
    ],
)
@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_unet_score_shapes(shape, channel_mult, sde):
    embedding = "fourier" if isinstance(sde, scorepde.VESDE) else "sinusoidal"
    net = tiny_unet(shape[1], channel_mult, torch.float32, embedding=embedding)
    x, t = batch(shape, torch.float32)
    s = ScoreModel(net, sde)(x, t)
    assert s.shape == x.shape and s.dtype == torch.float32 and bool(torch.isfinite(s).all())


@pytest.mark.parametrize("embedding", ["fourier", "sinusoidal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mlp_shapes(embedding, dtype):
    torch.manual_seed(0)
    net = MLPScore(2, hidden=16, depth=2, embedding=embedding).to(dtype)
    x, t = batch((5, 2), dtype)
    assert net(x, t).shape == (5, 2) and net(x, t).dtype == dtype
    assert ScoreModel(net, scorepde.VPSDE())(x, t).shape == (5, 2)
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_parametrization(sde):
    net = tiny_unet()
    model = ScoreModel(net, sde)
    x, t = batch((2, 1, 8, 8))
    a, std = sde.marginal(t)
    if isinstance(sde, scorepde.VESDE):
        label, scale = torch.log(sde.sigma(t)), sde.sigma(t)  # NCSN++: divide by σ(t)
    else:
        label, scale = 999 * t, torch.sqrt(std**2 + 1e-10)  # score_sde continuous VP
    expected = -net(x, label) / scale[:, None, None, None]
    torch.testing.assert_close(model(x, t), expected)
    assert bool(torch.isfinite(model(x, torch.zeros_like(t))).all())  # t = 0 stays finite


def test_jvp_matches_finite_difference():
    model = ScoreModel(tiny_unet(), scorepde.VESDE())
    x, t = batch((2, 1, 8, 8))
    v = torch.randn_like(x)
    h = 1e-5
    _, Jv = jvp(lambda y: model(y, t), (x,), (v,))
    fd = (model(x + h * v, t) - model(x - h * v, t)) / (2 * h)
    torch.testing.assert_close(Jv, fd, rtol=1e-6, atol=1e-6 * fd.abs().max().item())
    # ∂t through the log σ embedding (high frequencies: a smaller step) and the 1/σ(t) scale.
    _, dt = jvp(lambda tt: model(x, tt), (t,), (torch.ones_like(t),))
    h = 1e-7
    fd = (model(x, t + h) - model(x, t - h)) / (2 * h)
    torch.testing.assert_close(dt, fd, rtol=1e-5, atol=1e-5 * fd.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vmap_over_tangents(dtype):
    net = tiny_unet(dtype=dtype)
    x, t = batch((2, 1, 8, 8), dtype)
    V = torch.randn((3,) + x.shape, dtype=dtype)
    f = lambda y: net(y, t)
    batched = vmap(lambda v: jvp(f, (x,), (v,))[1])(V)
    looped = torch.stack([jvp(f, (x,), (v,))[1] for v in V])
    torch.testing.assert_close(batched, looped)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reverse_over_forward_equals_double_backward(dtype):
    """∇x ⟨w, J(x) v⟩ by torch.func.grad of a jvp and by autograd's double backward."""
    model = ScoreModel(tiny_unet(dtype=dtype), scorepde.VPSDE())
    x, t = batch((2, 1, 8, 8), dtype)
    v, w = torch.randn_like(x), torch.randn_like(x)
    rof = grad(lambda y: (jvp(lambda z: model(z, t), (y,), (v,))[1] * w).sum())(x)
    xr = x.clone().requires_grad_()
    (Jtw,) = torch.autograd.grad(model(xr, t), xr, w, create_graph=True)
    (dbl,) = torch.autograd.grad((Jtw * v).sum(), xr)
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(rof, dbl, rtol=tol, atol=tol * dbl.abs().max().item())
    if dtype == torch.float64:  # and both against a finite difference of ⟨Jᵀw, v⟩ along u
        u, h = torch.randn_like(x), 1e-5

        def first_order(y):
            y = y.clone().requires_grad_()
            return (torch.autograd.grad(model(y, t), y, w)[0] * v).sum()

        fd = (first_order(x + h * u) - first_order(x - h * u)) / (2 * h)
        torch.testing.assert_close((dbl * u).sum(), fd, rtol=1e-6, atol=1e-8)


def test_residual_exact_on_unet_and_its_parameter_gradient():
    sde = scorepde.VESDE()
    model = ScoreModel(tiny_unet(channels=4, heads=2), sde)
    x, t = batch((2, 1, 8, 8))
    eps = scorepde.residual(model, sde, x, t, "exact")  # D = 64 jvps inside a reverse pass
    assert eps.shape == x.shape and bool(torch.isfinite(eps).all())
    eps.pow(2).mean().backward()  # training through the residual
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool((g != 0).any()) for g in grads)


def test_residual_estimators_on_mlp():
    """Every estimator on a ScoreModel-wrapped MLP (c = 999 t): the deterministic ones match
    exact, the stochastic ones match it on average over many draws."""
    sde = scorepde.VPSDE()
    torch.manual_seed(0)
    model = ScoreModel(MLPScore(2, hidden=16, depth=2, embedding="sinusoidal").double(), sde)
    x, t = batch((4, 2))
    exact = scorepde.residual(model, sde, x, t, "exact")
    assert bool(torch.isfinite(exact).all()) and exact.abs().max() > 1e-3
    torch.testing.assert_close(scorepde.residual(model, sde, x, t, "hutchinson", div="exact"), exact)
    N = 800
    xr, tr = x.repeat(N, 1), t.repeat(N)
    for name, opts, bias in [
        ("paper", dict(h="auto"), 1e-6),
        ("hutchinson", {}, 0),
        ("directional", {}, 0),
        ("forward_fd", {}, 1e-3),
    ]:
        g = torch.Generator().manual_seed(0)
        draws = scorepde.residual(model, sde, xr, tr, name, generator=g, **opts).detach().view(N, 4, 2)
        err = (draws.mean(0) - exact).abs()
        stat = 5 * draws.std(0) / N**0.5
        assert bool((err <= stat + bias * exact.abs().max()).all()), (name, err, stat)


def test_batch_independence():
    x, t = batch((3, 1, 8, 8))
    model = ScoreModel(tiny_unet(), scorepde.VESDE()).train()  # GroupNorm: fine in train mode
    scorepde.check_batch_independent(model, x, t)
    padded = ScoreModel(tiny_unet(channel_mult=(1, 2, 2, 2)), scorepde.VESDE())
    scorepde.check_batch_independent(padded, *batch((3, 1, 28, 28)))

    torch.manual_seed(0)
    bn = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.SiLU(), nn.Conv2d(4, 1, 3, padding=1)
    ).double()
    raw = lambda y, tt: bn(y)
    with pytest.raises(ValueError, match="couples samples"):
        scorepde.check_batch_independent(raw, x, t)
    wrapped = ScoreModel(lambda_net(bn), scorepde.VESDE())
    with pytest.raises(ValueError, match="BatchNorm"):
        wrapped(x, t)
    wrapped.eval()  # running statistics: independent
    scorepde.check_batch_independent(wrapped, x, t)


class lambda_net(nn.Module):
    """Adapts an unconditional module to the ``net(x, c)`` signature."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x, c):
        return self.module(x)


def test_dropout_in_train_mode_still_differentiates():
    model = ScoreModel(tiny_unet(dropout=0.5), scorepde.VPSDE())
    x, t = batch((2, 1, 8, 8))
    _, Jv = jvp(lambda y: model(y, t), (x,), (torch.randn_like(x),))
    assert bool(torch.isfinite(Jv).all())
    eps = scorepde.residual(model, model.sde, x, t, "paper", validate=False)  # one probe: no vmap
    assert bool(torch.isfinite(eps).all())
    model.eval()
    torch.testing.assert_close(model(x, t), model(x, t))


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="in_channels=3"):
        tiny_unet()(torch.zeros(1, 3, 8, 8, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="embedding"):
        UNet(1, 8, embedding="learned")
    with pytest.raises(ValueError, match="marginal"):
        ScoreModel(tiny_unet(), scorepde.GenericSDE(lambda x, t: 0 * x, lambda t: torch.ones_like(t)))
    with pytest.raises(ValueError, match="condition='time'"):
        ScoreModel(tiny_unet(), scorepde.VPSDE(), condition="log_sigma")
    x, t = batch((2, 1, 8, 8))
    with pytest.raises(ValueError, match="one time per sample"):
        ScoreModel(tiny_unet(), scorepde.VPSDE())(x, t[:1])


class Zero(nn.Module):
    def forward(self, x, c):
        return torch.zeros_like(x)


@pytest.mark.parametrize("sde", [scorepde.VESDE(), scorepde.VPSDE()], ids=["ve", "vp"])
def test_toy_score_far_field(sde):
    """With F = 0 the skip form is the score of N(0, ŝ² I), ŝ² = a² d² + σ_t²."""
    model = ToyScore(Zero(), sde, data_std=2.0)
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.rand(5, dtype=torch.float64)
    a, _ = sde.marginal(t)
    var = a**2 * 4.0 + sde.marginal_variance(t)
    assert torch.allclose(model(x, t), -x / var[:, None])
    assert torch.equal(ToyScore(Zero(), sde, skip=False)(x, t), torch.zeros_like(x))
    with pytest.raises(ValueError):
        ToyScore(Zero(), sde, condition="sigma")


class Affine(nn.Module):
    """F = b and gate logits g, the same for every sample: ``net(u, c) -> [B, D + len(g)]``."""

    def __init__(self, b, g):
        super().__init__()
        self.b, self.g = b, g

    def forward(self, u, c):
        return torch.cat([self.b.expand_as(u), self.g.expand(u.shape[0], self.g.shape[1])], 1).to(u)


def test_gated_toy_score_is_an_isotropic_gaussian_score_exactly():
    """gate=True: s = −(ρ u − F)/ŝ with ρ = softplus(g + log(e − 1)); F = ŝ μ/v, ρ = ŝ²/v make
    it the score of N(μ, v I) at every t, which the plain skip cannot be for v ≠ ŝ²."""
    sde = scorepde.VESDE(0.01, 50.0)
    x, t = torch.randn(6, 3, dtype=torch.float64), torch.full((6,), 0.3, dtype=torch.float64)
    mu, v = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), 0.7
    shat = ToyScore(Zero(), sde).scale(t)[0]
    rho = shat**2 / v
    g = torch.log(torch.expm1(rho)) - torch.log(torch.expm1(torch.tensor(1.0, dtype=torch.float64)))
    model = ToyScore(Affine(shat * mu / v, g.reshape(1, 1)), sde, gate=True)
    assert torch.allclose(model(x, t), (mu - x) / v, atol=1e-12)
    plain = ToyScore(
        Affine(torch.zeros(3, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)), sde, gate=True
    )
    assert torch.allclose(plain(x, t), ToyScore(Zero(), sde)(x, t), atol=1e-12)  # g = 0: the plain skip
    with pytest.raises(ValueError, match="D \\+ 1"):
        ToyScore(Zero(), sde, gate=True)(x, t)
    with pytest.raises(ValueError, match="needs skip=True"):
        ToyScore(Zero(), sde, skip=False, gate=True)
    assert MLPScore(3, out_dim=4)(x.float(), t.float()).shape == (6, 4)


def test_time_rate_follows_the_conditioning():
    """How fast the net's time features turn, in radians per unit t (the FD step's scale)."""
    vp = ScoreModel(tiny_unet(embedding="sinusoidal"), scorepde.VPSDE())
    assert vp.condition == "time" and vp.time_rate() == pytest.approx(999.0)
    ve_sde = scorepde.VESDE(sigma_min=0.01, sigma_max=50.0)
    ve = ScoreModel(tiny_unet(embedding="fourier"), ve_sde)
    W = ve.net.embed[0].W
    want = 2 * torch.pi * W.abs().max().item() * torch.log(torch.tensor(50.0 / 0.01)).item()
    assert ve.time_rate() == pytest.approx(want, rel=1e-6)
    assert ScoreModel(lambda_net(nn.Identity()), scorepde.VPSDE()).time_rate() is None
    toy = ToyScore(MLPScore(2, embedding="fourier").double(), scorepde.VESDE(), data_std=1.0)
    t = torch.linspace(0, 1, 257, dtype=torch.float64)
    dc = jvp(lambda tt: torch.log(toy.scale(tt)), (t,), (torch.ones_like(t),))[1]
    assert toy.time_rate() == pytest.approx(toy.net.embed.max_frequency * dc.abs().max().item())
    assert MLPScore(2, embedding="sinusoidal").time_rate() == pytest.approx(1.0)  # bare: c = t


@pytest.mark.parametrize(
    "sde,embedding",
    [(scorepde.VESDE(), "fourier"), (scorepde.VPSDE(), "sinusoidal")],
    ids=["ve-fourier", "vp-sinusoidal"],
)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 2e-3)])
def test_forward_fd_steps_in_t_come_from_the_conditioning(sde, embedding, dtype, tol):
    """Defect 9: forward_fd's ∂t used h = 1e-3, 10-20% off the jvp on U-Nets that see 999 t or
    Fourier features of log σ. Its default steps now come from the net's time_rate."""
    model = ScoreModel(tiny_unet(embedding=embedding, dtype=dtype), sde)
    x, t = batch((3, 1, 8, 8), dtype=dtype)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    run = lambda **kw: scorepde.projected_residual_fd(
        model, sde, x, t, v, generator=torch.Generator().manual_seed(2), **kw
    )[0]
    fd, exact = run(), run(dt="jvp")
    dt_sv = jvp(lambda tt: (model(x, tt) * v).flatten(1).sum(1), (t,), (torch.ones_like(t),))[1]
    assert ((fd - exact).abs() / dt_sv.abs()).max() < tol
    paper = run(h=scorepde.derivatives.PAPER_STEPS)  # the published steps: far off here
    assert ((paper - exact).abs() / dt_sv.abs()).max() > 1e-2


def test_diagonal_gate_is_a_diagonal_gaussian_score_exactly():
    """gate="diagonal": ρ ∈ ℝᴰ, so F = ŝ μ/v and ρ = ŝ²/v (per coordinate) make it the score of
    N(μ, diag v) at every t, which the scalar gate cannot be for unequal v."""
    sde = scorepde.VESDE(0.01, 50.0)
    x, t = torch.randn(6, 3, dtype=torch.float64), torch.full((6,), 0.3, dtype=torch.float64)
    mu, v = (
        torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64),
        torch.tensor([0.3, 0.7, 2.5], dtype=torch.float64),
    )
    shat = ToyScore(Zero(), sde).scale(t)[0]
    rho = shat**2 / v
    g = torch.log(torch.expm1(rho)) - torch.log(torch.expm1(torch.tensor(1.0, dtype=torch.float64)))
    model = ToyScore(Affine(shat * mu / v, g.reshape(1, 3)), sde, gate="diagonal")
    assert torch.allclose(model(x, t), (mu - x) / v, atol=1e-12)
    with pytest.raises(ValueError, match="2D = 6"):
        ToyScore(Affine(shat * mu / v, g[:1].reshape(1, 1)), sde, gate="diagonal")(x, t)
    with pytest.raises(ValueError, match="unknown gate"):
        ToyScore(Zero(), sde, gate="full")
    assert ToyScore(Zero(), sde, gate=True).gate == "scalar" and ToyScore(Zero(), sde).gate is None
