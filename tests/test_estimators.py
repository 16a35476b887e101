"""scorepde.estimators: a name maps to (family, preset) in one table, each family says what it
needs, and a new estimator is one class plus one table line."""

import numpy as np
import pytest
import torch
from conftest import MLP

import scorepde as sp
from scorepde.audit import audit
from scorepde.derivatives import PAPER_STEPS
from scorepde.estimators import ESTIMATORS, Estimator, fpe_rhs_and_score, get_estimator
from scorepde.losses import FPObjective

# -- a new estimator, from this one "file" ------------------------------------------------------


class GradByDifferences(Estimator):
    """ε = ∂t s − ∇x L with ∇x L by central differences of L in x (2D evaluations of L, each
    with the exact divergence): no reverse mode at all."""

    OPTIONS = dict(hx=1e-4)
    needs_autograd = False

    @property
    def needs_forward_mode(self) -> bool:  # the exact divergence and ∂t s are jvps
        return True

    def residual(self, score, sde, x, t, generator=None):
        L, _ = fpe_rhs_and_score(score, sde, x, t)
        eye = torch.eye(x[0].numel(), dtype=x.dtype).view(-1, 1, *x.shape[1:])
        h = self._options["hx"]
        grad_L = torch.stack(
            [
                (
                    fpe_rhs_and_score(score, sde, x + h * e, t)[0]
                    - fpe_rhs_and_score(score, sde, x - h * e, t)[0]
                )
                / (2 * h)
                for e in eye
            ],
            1,
        ).view_as(x)
        dt_s = torch.func.jvp(lambda tt: score(x, tt), (t,), (torch.ones_like(t),))[1]
        return dt_s - grad_L, L


@pytest.fixture
def registered(monkeypatch):
    """The one table line that makes it an estimator of scorepde."""
    monkeypatch.setitem(ESTIMATORS, "grad_fd", (GradByDifferences, dict(hx=1e-4)))


def _setup():
    torch.manual_seed(0)
    model = MLP(2).double()
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(6, 2, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(6, generator=g, dtype=torch.float64)
    return model, sp.VPSDE(), x, t


def test_a_new_estimator_works_everywhere_from_one_table_line(registered):
    model, sde, x, t = _setup()
    exact, L_exact = sp.residual(model, sde, x, t, return_rhs=True)
    eps, L = sp.residual(model, sde, x, t, "grad_fd", return_rhs=True)
    torch.testing.assert_close(eps, exact, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(L, L_exact)
    op = sp.residual(model, sde, estimator="grad_fd", hx=1e-3)  # the operator, an override bound
    torch.testing.assert_close(op(x, t), exact, rtol=1e-4, atol=1e-4)
    sq, _ = sp.residual_norm_sq(model, sde, x, t, "grad_fd")
    torch.testing.assert_close(sq, exact.pow(2).sum(1), rtol=1e-5, atol=1e-6)
    # FPObjective: the same draws of (x_t, t) give the same regularizer as "exact"
    parts = {}
    for name in ("exact", "grad_fd"):
        objective = FPObjective(model, sde, beta=1.0, gamma=0.1, estimator=name)
        parts[name] = objective(x, torch.Generator().manual_seed(2))[1]
    torch.testing.assert_close(
        parts["grad_fd"]["fp_residual"], parts["exact"]["fp_residual"], rtol=1e-5, atol=0
    )
    torch.testing.assert_close(parts["grad_fd"]["fp_rhs"], parts["exact"]["fp_rhs"])
    # the audit's per-t computation
    runs = {
        name: audit(
            model,
            sde,
            x,
            [0.3, 0.7],
            estimator=name,
            curl=None,
            progress=False,
            generator=torch.Generator().manual_seed(3),
        )
        for name in ("exact", "grad_fd")
    }
    for a, b in zip(runs["grad_fd"]["r_fp"], runs["exact"]["r_fp"]):
        assert a["mean"] == pytest.approx(b["mean"], rel=1e-5)
    # its own options, and only those
    with pytest.raises(ValueError, match=r"unknown residual option.*'grad_fd'.*valid: \['hx'\]"):
        sp.residual(model, sde, x, t, "grad_fd", n_probes=2)


def test_without_its_table_line_it_is_unknown():
    model, sde, x, t = _setup()
    with pytest.raises(ValueError, match="unknown estimator 'grad_fd'; choose one of"):
        sp.residual(model, sde, x, t, "grad_fd")
    with pytest.raises(ValueError, match="unknown estimator"):
        FPObjective(model, sde, beta=1.0, estimator="grad_fd")


# -- what each family says it is ----------------------------------------------------------------


def test_each_estimator_declares_what_it_needs():
    plain = lambda x, t: x
    e = {name: get_estimator(name) for name in ESTIMATORS}
    assert e["exact"].needs_autograd and e["exact"].needs_forward_mode and e["exact"].time_stencil is None
    assert e["paper"].needs_autograd and not e["paper"].needs_forward_mode  # stencil + vjp
    assert e["paper"].time_stencil == "fd3" and e["paper"].time_step(plain) == PAPER_STEPS
    assert not e["directional"].needs_autograd and e["directional"].needs_forward_mode
    assert e["forward_fd"].plain_forwards_only and e["forward_fd"].time_stencil == "central"
    assert not get_estimator("forward_fd", dt="jvp").plain_forwards_only
    assert e["exact"].time_step(plain) is None
    assert [n for n in ESTIMATORS if e[n].stochastic] == ["paper", "hutchinson", "directional", "forward_fd"]


def _numpy_score(x, t):
    """A score computed outside torch: it has plain forwards and nothing else."""
    out = -np.asarray(x.detach()) * (1.0 + np.asarray(t.detach()))[:, None]
    return torch.from_numpy(out)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_plain_forwards_only_is_true_to_its_word(name):
    """An estimator that says it needs plain forwards only runs on a score autograd cannot
    see through; every other one is refused with the reason."""
    sde, x = sp.VPSDE(), torch.randn(4, 2, dtype=torch.float64)
    t = torch.full((4,), 0.5, dtype=torch.float64)
    run = lambda: sp.residual_norm_sq(
        _numpy_score, sde, x, t, name, generator=torch.Generator().manual_seed(0)
    )
    if get_estimator(name).plain_forwards_only:
        assert torch.isfinite(run()[0]).all()
    else:
        with pytest.raises(ValueError):
            run()


def test_bad_options_name_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown residual option\(s\) \['hx'\] for estimator 'exact'; valid:"
    ):
        get_estimator("exact", hx=0.1)
    with pytest.raises(ValueError, match="one Hutchinson probe"):
        get_estimator("forward_fd", div="exact")
    with pytest.raises(ValueError, match="forward_fd"):
        get_estimator("paper", dt="one_sided")


def test_forward_fd_step_in_x_uses_the_sdes_floor():
    from scorepde.estimators.forward_fd import x_step

    t0 = torch.zeros(1, dtype=torch.float64)
    for sde in (sp.VESDE(), sp.VPSDE(), sp.EDMSDE()):
        assert x_step(sde, t0, 0.05).item() == pytest.approx(0.05 * sde.sigma_floor)
