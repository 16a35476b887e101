"""scorepde.resumable: an interrupted run continues to the same weights; every step's draws
depend on (seed, step) only, so methods that draw more still share (t, z)."""
import os
import signal

import pytest
import torch

import scorepde as sp
from scorepde.losses import FPObjective
from scorepde.resumable import resumable_fit, step_seed
from scorepde.training import StopRequested, make_optimizer

from conftest import MLP


def _setup(beta=0.0):
    model = MLP(2, hidden=16, dtype=torch.float32, seed=3)
    sde = sp.VESDE(0.01, 5.0)
    obj = FPObjective(model, sde, beta=beta, estimator="exact", m=1)
    opt, sched = make_optimizer(model.parameters(), lr=1e-2, warmup=3)
    gmm = sp.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], 0.3)

    def batches(start):
        g = torch.Generator()
        for step in range(start, 10 ** 9):
            g.manual_seed(step_seed(99, step))
            yield gmm.sample(32, generator=g).float()
    return model, obj, opt, sched, batches


class Interrupting(torch.nn.Module):
    """Sends this process SIGINT during step ``at``: what Ctrl-C does mid-step."""

    def __init__(self, inner, at):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, x0, generator):
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        self.calls += 1
        return self.inner(x0, generator)


@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, beta):
    steps = 12
    model, obj, opt, sched, batches = _setup(beta)
    whole = resumable_fit(obj, model, opt, steps, batches=batches, ckpt_path=str(tmp_path / "a.pt"),
                          seed=5, scheduler=sched, ckpt_every=100, curve_every=2, progress=False)
    ref = [p.detach().clone() for p in model.parameters()]

    model, obj, opt, sched, batches = _setup(beta)
    ckpt = str(tmp_path / "b.pt")
    with pytest.raises(StopRequested):
        resumable_fit(Interrupting(obj, at=4), model, opt, steps, batches=batches, ckpt_path=ckpt,
                      seed=5, scheduler=sched, ckpt_every=100, curve_every=2, progress=False)
    assert os.path.isfile(ckpt)
    model, obj, opt, sched, batches = _setup(beta)          # a fresh process, in effect
    again = resumable_fit(obj, model, opt, steps, batches=batches, ckpt_path=ckpt, seed=5,
                          scheduler=sched, ckpt_every=100, curve_every=2, progress=False)
    assert again["resumed_at"] == [5]
    assert again["curve"] == whole["curve"] and len(whole["curve"]) == steps // 2
    for p, q in zip(model.parameters(), ref):
        assert torch.equal(p, q)


def test_draws_do_not_depend_on_what_a_method_consumed(tmp_path):
    seen = {}

    def recorder(name, extra):
        def objective(x0, generator):
            seen.setdefault(name, []).append(torch.rand(1, generator=generator).item())
            torch.rand(extra, generator=generator)              # e.g. R_FP's probes
            return lin(x0).pow(2).mean(), {}
        return objective

    for name, extra in (("dsm", 0), ("fp", 7)):
        lin = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(lin.parameters(), lr=1e-3)
        resumable_fit(recorder(name, extra), lin, opt, 5, batches=lambda s: iter(lambda: torch.ones(2, 2), None),
                      ckpt_path=str(tmp_path / f"{name}.pt"), seed=1, progress=False)
    assert seen["dsm"] == seen["fp"] and len(set(seen["dsm"])) == 5
