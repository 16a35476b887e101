"""scorepde.training.fit with a Checkpointing (what scorepde.resumable.resumable_fit was, kept as
a deprecated alias): an interrupted run continues to the same weights; every step's draws
depend on (seed, step) only, so methods that draw more still share (t, z)."""

import os
import signal

import pytest
import torch
from conftest import MLP

import scorepde as sp
from scorepde.losses import FPObjective
from scorepde.training import Checkpointing, StopRequested, fit, make_optimizer, step_seed


def _setup(beta=0.0):
    model = MLP(2, hidden=16, dtype=torch.float32, seed=3)
    sde = sp.VESDE(0.01, 5.0)
    obj = FPObjective(model, sde, beta=beta, estimator="exact", m=1)
    opt, sched = make_optimizer(model.parameters(), lr=1e-2, warmup=3)
    gmm = sp.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], 0.3)

    def batches(start):
        g = torch.Generator()
        for step in range(start, 10**9):
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
    kw = dict(generator=torch.Generator(), seed=5, scheduler=sched, curve_every=2, progress=False)
    whole = fit(
        obj, opt, batches, steps, model=model, checkpoint=Checkpointing(str(tmp_path / "a.pt"), 100), **kw
    )
    ref = [p.detach().clone() for p in model.parameters()]

    model, obj, opt, sched, batches = _setup(beta)
    ckpt = str(tmp_path / "b.pt")
    with pytest.raises(StopRequested):
        fit(
            Interrupting(obj, at=4),
            opt,
            batches,
            steps,
            model=model,
            checkpoint=Checkpointing(ckpt, 100),
            **{**kw, "scheduler": sched},
        )
    assert os.path.isfile(ckpt)
    model, obj, opt, sched, batches = _setup(beta)  # a fresh process, in effect
    again = fit(
        obj,
        opt,
        batches,
        steps,
        model=model,
        checkpoint=Checkpointing(ckpt, 100),
        **{**kw, "scheduler": sched},
    )
    assert again.resumed_at == [5] and again.steps == steps and len(again) == steps - 5
    assert again.curve == whole.curve and len(whole.curve) == steps // 2
    for p, q in zip(model.parameters(), ref):
        assert torch.equal(p, q)


def test_draws_do_not_depend_on_what_a_method_consumed(tmp_path):
    seen = {}

    def recorder(name, extra):
        def objective(x0, generator):
            seen.setdefault(name, []).append(torch.rand(1, generator=generator).item())
            torch.rand(extra, generator=generator)  # e.g. R_FP's probes
            return lin(x0).pow(2).mean(), {}

        return objective

    for name, extra in (("dsm", 0), ("fp", 7)):
        lin = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(lin.parameters(), lr=1e-3)
        fit(
            recorder(name, extra),
            opt,
            lambda s: iter(lambda: torch.ones(2, 2), None),
            5,
            generator=torch.Generator(),
            seed=1,
            model=lin,
            progress=False,
            checkpoint=Checkpointing(str(tmp_path / f"{name}.pt")),
        )
    assert seen["dsm"] == seen["fp"] and len(set(seen["dsm"])) == 5


def test_resumable_fit_is_a_deprecated_alias_of_fit(tmp_path):
    from scorepde.resumable import resumable_fit

    runs = []
    for name in ("alias", "fit"):
        model, obj, opt, sched, batches = _setup(0.05)
        if name == "alias":
            with pytest.warns(DeprecationWarning, match="scorepde.training.fit"):
                out = resumable_fit(
                    obj,
                    model,
                    opt,
                    6,
                    batches=batches,
                    ckpt_path=str(tmp_path / "a.pt"),
                    seed=5,
                    scheduler=sched,
                    ckpt_every=2,
                    curve_every=3,
                    progress=False,
                )
            runs.append(out["curve"])
        else:
            runs.append(
                fit(
                    obj,
                    opt,
                    batches,
                    6,
                    generator=torch.Generator(),
                    seed=5,
                    scheduler=sched,
                    model=model,
                    checkpoint=Checkpointing(str(tmp_path / "b.pt"), 2),
                    curve_every=3,
                    progress=False,
                ).curve
            )
    assert runs[0] == runs[1] and len(runs[0]) == 2
