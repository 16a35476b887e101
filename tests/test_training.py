"""Training plumbing: atomic checkpoints, exact resume, the NaN guard."""

import os
import time

import pytest
import torch
from conftest import MLP

import scorepde as sp
from scorepde.losses import FPObjective
from scorepde.training import (
    NonFiniteLossError,
    fit,
    load_checkpoint,
    make_ema,
    make_optimizer,
    rng_state,
    save_checkpoint,
    set_rng_state,
    train_step,
)


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
    full = fit(
        objective,
        opt,
        _batches(data_g),
        8,
        generator=g,
        scheduler=sched,
        ema=ema,
        model=model,
        progress=False,
    )

    torch.manual_seed(0)
    model, objective, opt, sched, ema = _setup()
    g, data_g = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    first = fit(
        objective,
        opt,
        _batches(data_g),
        4,
        generator=g,
        scheduler=sched,
        ema=ema,
        model=model,
        progress=False,
    )
    path = tmp_path / "ckpt.pt"
    save_checkpoint(
        str(path),
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "ema": ema.state_dict(),
            "step": 4,
            "rng": rng_state(g),
            "data_rng": data_g.get_state(),
        },
    )
    assert [f for f in os.listdir(tmp_path)] == ["ckpt.pt"]  # no temporary left behind

    torch.manual_seed(123)  # a fresh process: everything comes from the checkpoint
    model, objective, opt, sched, ema = _setup()
    state = load_checkpoint(str(path))
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    ema.load_state_dict(state["ema"])
    g, data_g = torch.Generator(), torch.Generator()
    set_rng_state(state["rng"], g)
    data_g.set_state(state["data_rng"])
    rest = fit(
        objective,
        opt,
        _batches(data_g),
        8,
        generator=g,
        scheduler=sched,
        ema=ema,
        model=model,
        progress=False,
        start=state["step"],
    )
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
    fit(
        objective,
        opt,
        _batches(torch.Generator().manual_seed(0)),
        2,
        scheduler=sched,
        ema=ema,
        model=model,
        progress=False,
    )
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
    assert weights_id(nudged) != weights_id(sd)  # one ulp apart
    assert weights_id({**sd, name: sd[name].double()}) != weights_id(sd)  # same values, other dtype


def test_a_time_budget_sets_the_rate_by_its_fraction_and_evaluates_off_the_clock():
    """fit(budget=Budget(seconds=...)): the cosine-to-5% rate follows the fraction of the
    budget used, the evaluations run n_evals + 1 times and are not counted in the budget."""
    from scorepde.schedules import Cosine
    from scorepde.training import Budget

    model = torch.nn.Linear(2, 2)  # fast steps: many fit in the budget
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    objective = lambda x, g: (model(x).pow(2).mean(), {})
    rates, evals = [], []

    def evaluate():
        evals.append(opt.param_groups[0]["lr"])
        time.sleep(0.05)  # longer than the whole budget: it must not count
        return {"score": 1.0}

    res = fit(
        objective,
        opt,
        _batches(torch.Generator().manual_seed(0)),
        budget=Budget(seconds=0.2),
        schedule=Cosine(0.05),
        model=model,
        evaluate=evaluate,
        n_evals=3,
        progress=False,
        on_step=lambda step, log: rates.append(opt.param_groups[0]["lr"]),
    )
    assert len(res.history) == 4 and [h["score"] for h in res.history] == [1.0] * 4
    assert 0.2 <= res.train_seconds < 0.25 and res.steps > 10  # the last step overshoots a little
    assert rates[0] == pytest.approx(1e-3, rel=1e-3) and rates == sorted(rates, reverse=True)
    assert rates[-1] >= 0.05e-3 and res.steps == len(res) == len(rates)


def test_step_budget_cosine_is_torchs_and_ends_at_the_floor():
    from scorepde.schedules import Cosine

    model, objective, _, _, _ = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen = []
    fit(
        objective,
        opt,
        _batches(torch.Generator().manual_seed(0)),
        10,
        schedule=Cosine(0.05),
        progress=False,
        on_step=lambda step, log: seen.append(opt.param_groups[0]["lr"]),
    )
    closed = [1e-3 * Cosine(0.05).factor((k + 1) / 10) for k in range(10)]
    assert seen == pytest.approx(closed, rel=1e-12) and seen[-1] == pytest.approx(0.05e-3)


def test_a_non_finite_step_in_fit_saves_the_weights_before_it(tmp_path):
    from scorepde.training import Checkpointing

    model, objective, opt, sched, ema = _setup()
    calls = []

    def flaky(x, g):
        calls.append(1)
        loss, parts = objective(x, g)
        return (loss * float("nan") if len(calls) == 4 else loss), parts

    path = str(tmp_path / "c.pt")
    with pytest.raises(NonFiniteLossError, match="step 3") as err:
        fit(
            flaky,
            opt,
            _batches(torch.Generator().manual_seed(0)),
            10,
            scheduler=sched,
            ema=ema,
            model=model,
            checkpoint=Checkpointing(path, every=100),
            progress=False,
        )
    state = load_checkpoint(path)
    assert err.value.step == 3 and state["step"] == 3
    assert all(torch.equal(a, b) for a, b in zip(state["model"].values(), model.state_dict().values()))


def test_across_ranks_makes_one_ranks_stop_everyones(tmp_path):
    """Under DDP a signal may reach one rank: its verdict, averaged over ranks, stops all."""
    from scorepde.training import Checkpointing, StopRequested

    model, objective, opt, sched, _ = _setup()
    seen = []

    def across_ranks(values):  # this rank says "go on"; another has been interrupted at step 2
        if "stop" not in values:  # the NaN verdicts: everyone is finite
            return values
        seen.append(dict(values))
        return {**values, "stop": 0.5 if len(seen) == 3 else values["stop"]}

    path = str(tmp_path / "c.pt")
    with pytest.raises(StopRequested):
        fit(
            objective,
            opt,
            _batches(torch.Generator().manual_seed(0)),
            10,
            scheduler=sched,
            model=model,
            checkpoint=Checkpointing(path, every=100),
            across_ranks=across_ranks,
            progress=False,
        )
    assert load_checkpoint(path)["step"] == 3
    assert {"loss", "stop", "due"} <= set(seen[-1])


def test_a_bad_budget_is_a_value_error():
    from scorepde.training import Budget

    with pytest.raises(ValueError, match="exactly one"):
        Budget(steps=3, seconds=1.0)
    with pytest.raises(ValueError, match="clock"):
        Budget(seconds=1.0, clock="gpu")
    model, objective, opt, _, _ = _setup()
    with pytest.raises(ValueError, match="needs a budget"):
        fit(objective, opt, _batches(torch.Generator()), progress=False)


def test_checkpointing_trust_reaches_the_loader(tmp_path, monkeypatch):
    """A checkpoint that names code loads only when the caller says it trusts it."""
    import scorepde.training as training
    from scorepde.training import Checkpointing

    model, objective, opt, sched, _ = _setup()
    path = str(tmp_path / "c.pt")
    fit(
        objective,
        opt,
        _batches(torch.Generator().manual_seed(0)),
        2,
        scheduler=sched,
        model=model,
        checkpoint=Checkpointing(path),
        progress=False,
    )
    seen = []
    real = training.load_checkpoint
    monkeypatch.setattr(training, "load_checkpoint", lambda p, **kw: seen.append(kw) or real(p, **kw))
    for trust in (False, True):
        fit(
            objective,
            opt,
            _batches(torch.Generator().manual_seed(0)),
            3,
            scheduler=sched,
            model=model,
            checkpoint=Checkpointing(path, trust=trust),
            progress=False,
        )
    assert seen == [{"trust": False}, {"trust": True}]
