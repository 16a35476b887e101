"""Training plumbing: atomic checkpoints, exact resume, the NaN guard."""
import os

import pytest
import torch

import scorepde as sp
from scorepde.losses import FPObjective
from scorepde.training import (NonFiniteLossError, fit, load_checkpoint, make_ema, make_optimizer,
                               rng_state, save_checkpoint, set_rng_state, train_step)
from conftest import MLP


def _setup():
    model = MLP(2, dtype=torch.float32)
    objective = FPObjective(model, sp.VESDE(), beta=0.01, estimator="hutchinson")
    opt, sched = make_optimizer(model.parameters(), lr=1e-3, warmup=3)
    return model, objective, opt, sched, make_ema(model, 0.9)


def _batches(gen):
    while True:
        yield torch.randn(16, 2, generator=gen)


def test_resume_continues_exactly(tmp_path):
    torch.manual_seed(0)
    model, objective, opt, sched, ema = _setup()
    g, data_g = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    full = fit(objective, opt, _batches(data_g), 8, generator=g, scheduler=sched, ema=ema,
               model=model, progress=False)

    torch.manual_seed(0)
    model, objective, opt, sched, ema = _setup()
    g, data_g = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    first = fit(objective, opt, _batches(data_g), 4, generator=g, scheduler=sched, ema=ema,
                model=model, progress=False)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(str(path), {"model": model.state_dict(), "opt": opt.state_dict(),
                                "sched": sched.state_dict(), "ema": ema.state_dict(), "step": 4,
                                "rng": rng_state(g), "data_rng": data_g.get_state()})
    assert [f for f in os.listdir(tmp_path)] == ["ckpt.pt"]  # no temporary left behind

    torch.manual_seed(123)  # a fresh process: everything comes from the checkpoint
    model, objective, opt, sched, ema = _setup()
    state = load_checkpoint(str(path))
    model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"]); ema.load_state_dict(state["ema"])
    g, data_g = torch.Generator(), torch.Generator()
    set_rng_state(state["rng"], g); data_g.set_state(state["data_rng"])
    rest = fit(objective, opt, _batches(data_g), 8, generator=g, scheduler=sched, ema=ema,
               model=model, progress=False, start=state["step"])
    assert [l["loss"] for l in first + rest] == [l["loss"] for l in full]


def test_nan_guard_names_the_step():
    model, objective, opt, sched, ema = _setup()
    bad = torch.full((16, 2), float("nan"))
    with pytest.raises((NonFiniteLossError, ValueError), match="non-finite|step 7"):
        train_step(objective, opt, bad, step=7)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="step 7"):
        train_step(lambda x, g: (torch.tensor(float("nan")), {}), opt, bad, step=7)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_nan_guard_checks_the_gradients_too():
    """Defect 6: a finite loss with a NaN gradient used to reach optimizer.step()."""
    model, objective, opt, sched, ema = _setup()
    x0 = torch.randn(16, 2)

    def finite_loss_nan_grad(x, g):
        loss, parts = objective(x, g)
        w = next(model.parameters())
        return loss + torch.sqrt((w - w.detach()).sum()), parts  # + sqrt(0): value 0, grad inf·1 → inf

    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="non-finite gradients at step 3"):
        train_step(finite_loss_nan_grad, opt, x0, step=3, grad_clip=1.0, ema=ema, model=model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not opt.state  # Adam never stepped: its moments hold no NaN either
    log = train_step(objective, opt, x0, step=3)  # and training can go on from here
    assert all(torch.isfinite(p).all() for p in model.parameters()) and log["loss"] == log["loss"]


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "nope.pt"))


def test_jsonl_log_drops_steps_after_the_resume_point(tmp_path):
    from scorepde.training import JsonlLog
    path = str(tmp_path / "log.jsonl")
    log = JsonlLog(path)
    for s in range(5):
        log.write({"step": s, "loss": float(s)})
    log.close()
    with open(path, "a") as f:
        f.write('{"step": 5, "lo')  # a line cut short by a crash
    log = JsonlLog(path, start=3)
    log.write({"step": 3, "loss": -1.0})
    log.close()
    assert [(r["step"], r["loss"]) for r in JsonlLog.read(path)] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, -1.0)]


def test_training_state_round_trip(tmp_path):
    from scorepde.training import restore_training_state, training_state
    model, objective, opt, sched, ema = _setup()
    fit(objective, opt, _batches(torch.Generator().manual_seed(0)), 2, scheduler=sched, ema=ema,
        model=model, progress=False)
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, training_state(2, model, opt, sched, ema, [rng_state()], {"a": 1}))
    model2, _, opt2, sched2, ema2 = _setup()
    assert restore_training_state(load_checkpoint(path), model2, opt2, sched2, ema2) == 2
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert sched2.last_epoch == 2 and int(ema2.n_averaged) == 2


def test_weights_id_names_bit_equal_weights_only():
    from scorepde.training import weights_id
    model = MLP(2, dtype=torch.float32)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert weights_id(sd) == weights_id(model.state_dict()) and len(weights_id(sd)) == 12
    name = next(iter(sd))
    nudged = {**sd, name: torch.nextafter(sd[name], torch.full_like(sd[name], float("inf")))}
    assert weights_id(nudged) != weights_id(sd)                          # one ulp apart
    assert weights_id({**sd, name: sd[name].double()}) != weights_id(sd)  # same values, other dtype
