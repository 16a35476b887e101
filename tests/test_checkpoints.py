"""scorepde.checkpoints: what scorepde writes loads with weights_only=True, and no entry point
runs the code a shared file carries (a ``__reduce__`` payload that creates a marker file).

Each refusal test fails on the main of 2026-12-05 (ca2fc21), where ``load_checkpoint``
unpickled with ``weights_only=False`` and the CIFAR loader with ``pickle.load``: there the
marker file appears.
"""

import importlib.util
import io
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from scorepde.checkpoints import (
    load_checkpoint,
    read_torch_file,
    restore_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    training_state,
)
from scorepde.training import make_ema, make_optimizer

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(path: Path, marker: Path, **state) -> Path:
    """A file shaped like a checkpoint of image/train.py, with a code payload in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"step": 1, "model": {}, "config": {"dataset": "digits"}, **state, "payload": Payload(marker)}, path
    )
    return path


def _script(name):
    spec = importlib.util.spec_from_file_location(f"image_{name}_ckpt", ROOT / "image" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _refused(err: str, path: Path, marker: Path, flag: str = "--trust-checkpoint") -> None:
    assert not marker.exists(), "the payload ran"
    assert str(path) in err and flag in err and "io.open" in err


def test_load_checkpoint_refuses_a_code_payload(tmp_path):
    path, marker = _evil_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "ran"), tmp_path / "ran"
    with pytest.raises(ValueError) as err:
        load_checkpoint(str(path))
    _refused(str(err.value), path, marker, "trust=True")
    assert "--trust-checkpoint" in str(err.value)


def test_trust_opens_it_the_old_way(tmp_path):
    path, marker = _evil_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "ran"), tmp_path / "ran"
    assert load_checkpoint(str(path), trust=True)["step"] == 1 and marker.exists()


def test_a_bare_pickle_is_refused_too(tmp_path):
    path, marker = tmp_path / "checkpoint.pt", tmp_path / "ran"
    path.write_bytes(pickle.dumps({"step": 1, "model": {}, "x": Payload(marker)}))
    with pytest.raises(ValueError, match="trust=True"):
        load_checkpoint(str(path))
    assert not marker.exists()


def test_eval_refuses_a_code_payload(tmp_path, capsys):
    path, marker = _evil_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "ran"), tmp_path / "ran"
    with pytest.raises(SystemExit) as e:
        _script("eval").main([str(path), "--no-progress", "--out", str(tmp_path / "eval")])
    assert e.value.code == 2
    _refused(capsys.readouterr().err, path, marker)


def test_audit_refuses_a_code_payload(tmp_path, capsys):
    from scorepde.audit import main

    path, marker = _evil_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "ran"), tmp_path / "ran"
    with pytest.raises(SystemExit) as e:  # main(argv) -> None: errors exit 2 (scorepde.errors.fail)
        main(["--model", str(path), "--quick", "--no-progress", "--out", str(tmp_path / "a")])
    assert e.value.code == 2
    _refused(capsys.readouterr().err, path, marker)


def gmm_factory():
    """A (score, sde) factory for the audit: a closed-form mixture score on 2-D data."""
    import scorepde as sp

    sde, gmm = sp.VPSDE(), sp.GaussianMixture([[-1.0, 0.0], [1.0, 0.0]], [0.5, 0.5], [0.5, 0.5])
    return (lambda x, t: gmm.score(x, t, sde)), sde


def test_audit_data_tensor_file_refuses_a_code_payload(tmp_path, capsys):
    from scorepde.audit import main

    path, marker = tmp_path / "data.pt", tmp_path / "ran"
    torch.save([torch.zeros(4, 2), Payload(marker)], path)
    with pytest.raises(SystemExit) as e:
        main(
            [
                "--model",
                f"{__name__}:gmm_factory",
                "--data",
                str(path),
                "--quick",
                "--no-progress",
                "--out",
                str(tmp_path / "a"),
            ]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert not marker.exists() and str(path) in err and "io.open" in err and "torch.save(x, path)" in err


@pytest.mark.parametrize("flag", ["--resume", "--init-from"])
def test_train_refuses_a_code_payload(tmp_path, capsys, flag):
    out, marker = tmp_path / "run", tmp_path / "ran"
    path = _evil_checkpoint(out / "checkpoint.pt" if flag == "--resume" else tmp_path / "src.pt", marker)
    argv = ["--out", str(out), "--steps", "2", "--no-progress"]
    argv += [flag] if flag == "--resume" else [flag, str(path)]
    with pytest.raises(SystemExit) as e:
        _script("train").main(argv)
    assert e.value.code == 2
    _refused(capsys.readouterr().err, path, marker)


def test_finetune_base_checkpoint_refuses_a_code_payload(tmp_path, capsys):
    out, marker = tmp_path / "ft", tmp_path / "ran"
    path = _evil_checkpoint(out / "base" / "checkpoint.pt", marker)
    with pytest.raises(SystemExit) as e:
        _script("finetune").main(["--out", str(out), "--base-stages", "2", "--no-progress", "--base-only"])
    assert e.value.code == 2
    _refused(capsys.readouterr().err, path, marker)


def test_cifar_batch_refuses_a_code_payload(tmp_path):
    from scorepde.data import load_dataset

    marker = tmp_path / "ran"
    data = np.zeros((2, 3072), np.uint8)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [0, 1], b"x": Payload(marker)}, f, protocol=2)
    with pytest.raises(ValueError) as err:
        load_dataset("cifar10", "train", tmp_path)
    assert not marker.exists() and "data_batch_1" in str(err.value) and "io.open" in str(err.value)


def test_diffusers_round_trip_carries_no_code(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    unet.save_pretrained(tmp_path / "unet")
    assert not list((tmp_path / "unet").glob("*.bin")) and list((tmp_path / "unet").glob("*.safetensors"))
    again = diffusers.UNet2DModel.from_pretrained(tmp_path / "unet")
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), again.state_dict().values()))


def _tiny_training():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt, sched = make_optimizer(model.parameters(), lr=1e-2, warmup=3)
    ema = make_ema(model, 0.9)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 3)).square().mean().backward()
        opt.step()
        sched.step()
        ema.update_parameters(model)
    return model, opt, sched, ema


def test_what_scorepde_writes_loads_with_weights_only(tmp_path):
    model, opt, sched, ema = _tiny_training()
    gen = torch.Generator().manual_seed(3)
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(
        path,
        training_state(
            2,
            model,
            opt,
            sched,
            ema,
            [rng_state(gen)],
            {"dataset": "digits", "channel_mult": (1, 2), "beta": 0.1},
            curve=[{"step": 1, "loss": 0.5}],
            train_s=1.5,
        ),
    )
    state = torch.load(path, weights_only=True)
    assert state["step"] == 2 and state["config"]["channel_mult"] == (1, 2)
    model2, opt2, sched2, ema2 = _tiny_training()
    assert restore_training_state(load_checkpoint(path), model2, opt2, sched2, ema2) == 2


def test_rng_state_round_trip_continues_every_stream_exactly(tmp_path):
    gen = torch.Generator().manual_seed(5)
    torch.randn(3, generator=gen), np.random.normal(), random.random()  # a cached Gaussian, moved states
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, {"step": 0, "model": {}, "rng": [rng_state(gen)]})
    draw = lambda g: (torch.rand(4), np.random.normal(size=3), random.gauss(0, 1), torch.rand(2, generator=g))
    first = draw(gen)
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    gen2 = torch.Generator()
    set_rng_state(torch.load(path, weights_only=True)["rng"][0], gen2)
    again = draw(gen2)
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2] and torch.equal(first[3], again[3])


def test_an_older_checkpoint_loads_without_trust_and_resumes_exactly(tmp_path):
    """Checkpoints of main before 2026-12-06 held numpy's state as an array and Python's as
    a tuple: they load (no trust needed), come back as tensors, and restore the same draws."""
    gen = torch.Generator().manual_seed(1)
    np.random.seed(4)
    old = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generator": gen.get_state(),
    }
    path = tmp_path / "old.pt"
    torch.save({"step": 7, "model": {}, "config": {"a": 1}, "rng": [old]}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # the reason it needed migrating
    expected = np.random.random(3), random.random(), torch.rand(2, generator=gen)
    state = load_checkpoint(str(path))
    assert isinstance(state["rng"][0]["numpy"]["key"], torch.Tensor)
    np.random.seed(0), random.seed(0)
    set_rng_state(state["rng"][0], gen)
    assert np.array_equal(np.random.random(3), expected[0]) and random.random() == expected[1]
    assert torch.equal(torch.rand(2, generator=gen), expected[2])
    save_checkpoint(str(tmp_path / "new.pt"), state)  # the documented one-line conversion
    assert torch.load(tmp_path / "new.pt", weights_only=True)["step"] == 7


def test_save_refuses_what_would_need_code_to_load(tmp_path):
    with pytest.raises(ValueError, match=r"state\['config'\]\['x'\] is a numpy.ndarray"):
        save_checkpoint(str(tmp_path / "c.pt"), {"step": 0, "model": {}, "config": {"x": np.zeros(2)}})
    with pytest.raises(ValueError, match="float64"):
        save_checkpoint(str(tmp_path / "c.pt"), {"step": 0, "model": {}, "loss": np.float64(1.0)})
    assert not (tmp_path / "c.pt").exists()


def test_bad_files_are_named(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(str(good), {"step": 0, "model": {"w": torch.zeros(100)}})
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:300])
    (tmp_path / "text.pt").write_text("hello")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    for name, match in [
        ("cut.pt", "not a readable scorepde checkpoint"),
        ("text.pt", "not a readable scorepde checkpoint"),
        ("other.pt", "not a scorepde checkpoint"),
    ]:
        with pytest.raises(ValueError, match=match) as err:
            load_checkpoint(str(tmp_path / name))
        assert str(tmp_path / name) in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(str(tmp_path / "nope.pt"))
    x = torch.arange(6.0).reshape(3, 2)
    buf = io.BytesIO()
    torch.save(x, buf)
    (tmp_path / "x.pt").write_bytes(buf.getvalue())
    assert torch.equal(read_torch_file(str(tmp_path / "x.pt"), what="tensor file"), x)


def test_toy_density_checkpoints_load_with_weights_only(tmp_path, monkeypatch):
    """toy/density.py saves through fit's Checkpointing: every file it writes is tensors and
    plain data (its data sampler's random state included)."""
    import sys

    import scorepde.training as training

    seen = []
    real = training.save_checkpoint

    def save(path, state):
        real(path, state)
        seen.append(torch.load(path, weights_only=True))

    monkeypatch.setattr(training, "save_checkpoint", save)
    monkeypatch.setattr(sys, "path", [str(ROOT / "toy"), *sys.path])
    import density

    density.main(
        ["--quick", "--datasets", "gmm1d", "--no-progress", "--ckpt-every", "3", "--out", str(tmp_path)]
    )
    assert seen and all(isinstance(s["rng"][0]["generator"], torch.Tensor) for s in seen)


def test_likelihood_cost_refuses_a_code_payload(tmp_path):
    """benchmarks/likelihood_cost.py loads the image checkpoint it is given with weights only."""
    from scorepde.commands import likelihood_cost as module

    path, marker = _evil_checkpoint(tmp_path / "ck.pt", tmp_path / "ran"), tmp_path / "ran"
    with pytest.raises(ValueError) as err:
        module.image_cases(str(path), 1, [0], None)
    assert not marker.exists() and str(path) in str(err.value)


def test_fit_resume_refuses_a_code_payload(tmp_path):
    """fit(checkpoint=Checkpointing(path)) resumes from path when it exists (toy/density.py,
    image/finetune.py): a payload there is refused, and trust=True is the way out."""
    from scorepde.training import Checkpointing, fit

    path, marker = _evil_checkpoint(tmp_path / "ck.pt", tmp_path / "ran"), tmp_path / "ran"
    model = torch.nn.Linear(2, 1)
    opt, _ = make_optimizer(model.parameters())
    loss = lambda x, g: (model(x).square().mean(), {})  # noqa: E731
    with pytest.raises(ValueError) as err:
        fit(
            loss,
            opt,
            iter([torch.zeros(4, 2)] * 3),
            2,
            model=model,
            checkpoint=Checkpointing(str(path)),
            progress=False,
        )
    _refused(str(err.value), path, marker, "trust=True")
