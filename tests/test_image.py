"""image/train.py, image/eval.py and the library pieces they stand on (scorepde.image_config, image_eval).

The scripts run in-process (their ``main(argv)``) with a tiny U-Net, a few steps and a few
test images, so the whole file takes well under a minute on two busy cores.
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from scorepde.commands import bench_bpd as bench
from scorepde.commands import eval as evaluate
from scorepde.commands import train
from scorepde.image_config import ImageConfig, build_objective, build_score_model, build_sde
from scorepde.image_eval import TABLE4_TIMES
from scorepde.plotting import save_grid
from scorepde.reporting import residual_table
from scorepde.training import JsonlLog, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--channels",
    "8",
    "--batch-size",
    "16",
    "--threads",
    "1",
    "--no-progress",
    "--sample-steps",
    "5",
    "--n-samples",
    "4",
    "--ckpt-every",
    "1000",
]


def _losses(out):
    return [
        {k: v for k, v in r.items() if k != "step_time"}
        for r in JsonlLog.read(os.path.join(out, "log.jsonl"))
    ]


@pytest.mark.parametrize("module", [train, evaluate, bench], ids=["train", "eval", "bench_bpd"])
def test_help(module, capsys):
    with pytest.raises(SystemExit) as e:
        module.parse_args(["--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out


@pytest.mark.parametrize("objective", ["dsm", "fp"])
def test_a_few_steps_on_digits(tmp_path, objective):
    out = str(tmp_path / objective)
    code = train.main(
        TINY
        + ["--steps", "3", "--objective", objective, "--subbatch", "4", "--out", out, "--eval-images", "-1"]
    )
    assert code == 0
    logs = _losses(out)
    assert [r["step"] for r in logs] == [0, 1, 2]
    assert all(math.isfinite(r["loss"]) for r in logs)
    assert all((r["fp"] > 0) == (objective == "fp") for r in logs)
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)  # tensors and plain data
    assert state["step"] == 3 and state["config"]["objective"] == objective
    assert {"model", "ema", "optimizer", "scheduler", "rng", "config"} <= set(state)
    assert os.path.isfile(os.path.join(out, "samples.png"))
    assert sorted(os.listdir(out)) == [
        "checkpoint.pt",
        "config.json",
        "log.jsonl",
        "metrics.json",
        "samples.png",
        "training_curves.png",
    ]


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    common = TINY + ["--objective", "fp", "--subbatch", "4", "--eval-images", "-1", "--warmup", "2"]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    assert train.main(common + ["--steps", "6", "--out", straight]) == 0
    assert train.main(common + ["--steps", "3", "--out", split]) == 0
    torch.manual_seed(999)  # nothing may depend on the process's global state
    assert train.main(common + ["--steps", "6", "--out", split, "--resume"]) == 0
    a, b = _losses(straight), _losses(split)
    assert [r["step"] for r in b] == list(range(6))
    assert a == b  # bit-identical losses, parts and learning rates
    sa = load_checkpoint(os.path.join(straight, "checkpoint.pt"))
    sb = load_checkpoint(os.path.join(split, "checkpoint.pt"))
    assert all(torch.equal(sa["ema"][k], sb["ema"][k]) for k in sa["ema"])


@pytest.mark.slow
def test_epoch_boundary_resume_matches(tmp_path):
    """Resume mid-epoch and across the epoch boundary: the batch order depends on (seed, epoch)."""
    common = TINY + ["--batch-size", "500", "--eval-images", "-1", "--channel-mult", "1", "--attention", "0"]
    straight, split = str(tmp_path / "a"), str(tmp_path / "b")  # 1438 images: 2 batches per epoch
    assert train.main(common + ["--steps", "5", "--out", straight]) == 0
    assert train.main(common + ["--steps", "3", "--out", split]) == 0
    assert train.main(common + ["--steps", "5", "--out", split, "--resume"]) == 0
    assert _losses(straight) == _losses(split)


def test_eval_gives_finite_bpd_and_the_table(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert (
        train.main(
            TINY
            + [
                "--steps",
                "2",
                "--out",
                out,
                "--eval-images",
                "8",
                "--eval-repeats",
                "1",
                "--eval-rtol",
                "1e-3",
            ]
        )
        == 0
    )
    assert "test bits/dim" in capsys.readouterr().out
    m = json.loads(Path(os.path.join(out, "metrics.json")).read_text())
    assert math.isfinite(m["bpd"]) and m["eval_images"] == 8
    ev = str(tmp_path / "eval")
    assert (
        evaluate.main(
            [
                os.path.join(out, "checkpoint.pt"),
                "--out",
                ev,
                "--images",
                "4",
                "--repeats",
                "2",
                "--rtol",
                "1e-3",
                "--residual-images",
                "4",
                "--n-samples",
                "4",
                "--sample-steps",
                "5",
                "--no-progress",
            ]
        )
        == 0
    )
    m = json.loads(Path(os.path.join(ev, "metrics.json")).read_text())
    assert math.isfinite(m["bpd"]) and math.isfinite(m["bpd_std"]) and len(m["bpd_per_repeat"]) == 2
    # one name, one meaning: bpd_stderr over the 4 images, eval_se over the 2 repeats
    assert m["eval_se"] == pytest.approx(abs(m["bpd_per_repeat"][0] - m["bpd_per_repeat"][1]) / 2)
    assert m["bpd_stderr"] > 0 and m["bpd_stderr"] != pytest.approx(m["eval_se"])
    assert m["residual_curves"]["t"] == list(TABLE4_TIMES)
    assert all(math.isfinite(v) for v in m["residual_curves"]["r_fp"] + m["residual_curves"]["r_dsm"])
    table = Path(ev, "residuals.md").read_text()
    assert "r_FP(t)" in table and "r_DSM-like(t)" in table and "| 0.001 |" in table


def test_init_from_fine_tunes(tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    assert train.main(TINY + ["--steps", "2", "--out", src, "--eval-images", "-1"]) == 0
    assert (
        train.main(
            TINY
            + [
                "--steps",
                "1",
                "--out",
                dst,
                "--eval-images",
                "-1",
                "--objective",
                "fp",
                "--subbatch",
                "2",
                "--init-from",
                os.path.join(src, "checkpoint.pt"),
            ]
        )
        == 0
    )
    assert json.loads(Path(os.path.join(dst, "config.json")).read_text())["init_from"].endswith(
        "checkpoint.pt"
    )
    with pytest.raises(SystemExit) as e:  # the architecture comes from the source model
        train.main(
            TINY + ["--out", dst, "--channels", "16", "--init-from", os.path.join(src, "checkpoint.pt")]
        )
    assert e.value.code == 2


def test_nan_guard_saves_and_names_the_step(tmp_path, capsys):
    out = str(tmp_path / "nan")
    code = train.main(
        TINY
        + [
            "--steps",
            "20",
            "--out",
            out,
            "--eval-images",
            "-1",
            "--lr",
            "1e30",
            "--warmup",
            "0",
            "--grad-clip",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "training stopped" in err and "at step" in err
    state = load_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert f"at step {state['step']}" in err  # the saved state is the last good one
    saved = [v for part in ("model", "ema") for v in state[part].values() if v.is_floating_point()]
    assert saved and all(bool(torch.isfinite(v).all()) for v in saved)  # and not corrupted


def test_bad_input_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(TINY + ["--beta", "-1", "--out", str(tmp_path / "o")])
    assert "beta" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(TINY + ["--resume", "--out", str(tmp_path / "none")])
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(tmp_path / "nope.pt")])
    assert e.value.code == 2


def test_training_defaults_to_the_library_estimator_and_paper_is_a_preset():
    """Issue 29 item 6: the image config's estimator is DEFAULT_FP's; the paper's comes by name."""
    from scorepde.image_config import preset_config
    from scorepde.losses import DEFAULT_FP

    assert ImageConfig().estimator == DEFAULT_FP["estimator"] == "forward_fd"
    assert preset_config("mnist")["estimator"] == "paper"
    config = lambda argv: ImageConfig(**train.make_config(train.parse_args(argv)))  # noqa: E731
    assert config(["--objective", "fp"]).estimator == "forward_fd"
    assert config(["--estimator", "paper"]).estimator == "paper"
    assert config(["--preset", "mnist"]).estimator == "paper"


@pytest.mark.parametrize("sde", ["ve", "vp", "subvp"])
def test_builders(sde):
    cfg = ImageConfig(sde=sde, channels=8, channel_mult=(1, 2), objective="fp", subbatch=2)
    s = build_sde(cfg, (1, 8, 8))
    model = build_score_model(cfg, s, (1, 8, 8))
    obj = build_objective(cfg, model, s)
    x = torch.rand(4, 1, 8, 8)
    loss, parts = obj(x, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and parts["fp"] > 0
    if sde == "ve":
        assert s.sigma_max == pytest.approx(8.0)  # the [0,1]^64 cube's diameter
    with pytest.raises(ValueError, match="objective"):
        ImageConfig(objective="ssm")


def test_save_grid_and_table(tmp_path):
    import matplotlib.image as mpimg

    k = torch.randint(0, 17, (5, 1, 8, 8), dtype=torch.uint8)
    path = save_grid(k, 17, str(tmp_path / "g.png"), nrow=3, pad=1, min_cell=8)
    img = mpimg.imread(path)
    assert img.shape[:2] == (2 * 9 + 1, 3 * 9 + 1)
    rgb = save_grid(torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8), 256, str(tmp_path / "c.png"))
    assert os.path.isfile(rgb)
    curves = {"t": [1e-3, 0.1], "r_fp": [1.0, 2.0], "r_dsm": [3.0, 4.0]}
    assert residual_table(curves, "VE").splitlines()[2] == "| r_FP(t) | 1.000 | 2.000 |"


def test_ctrl_c_saves_a_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = str(tmp_path / "int")
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "image", "train.py"),
            *TINY,
            "--steps",
            "100000",
            "--out",
            out,
            "--eval-images",
            "-1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = os.path.join(out, "log.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and not (
        os.path.isfile(log) and len(Path(log).read_text().splitlines()) >= 2
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    state = load_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert state["step"] == len(JsonlLog.read(log)) >= 2  # every logged step is in the checkpoint
    assert "--resume" in err


def test_old_imaging_names_still_resolve_with_a_warning():
    """scorepde.imaging was split (issue 29); its names keep working for one release."""
    import scorepde.imaging as old
    from scorepde.image_eval import image_bpd

    with pytest.warns(DeprecationWarning, match="image_config"):
        assert old.ImageConfig is ImageConfig
    with pytest.warns(DeprecationWarning, match="image_bpd"):
        assert old.test_bpd is image_bpd
    with pytest.warns(DeprecationWarning, match="bpd_metrics"):
        assert old.bpd_standard_error({"per_repeat": [1.0, 2.0]}, 2) == pytest.approx(0.5)
    with pytest.raises(AttributeError):
        _ = old.nothing_here


def test_in_chunks_gives_the_model_values_in_batches_of_at_most_size():
    """The held-out DSM loss of image/finetune.py runs the U-Net through ``in_chunks``: the same
    scores as one call (the U-Net treats samples apart), never more than ``size`` at a time."""
    from scorepde.image_eval import in_chunks

    cfg = ImageConfig(channels=8, channel_mult=(1,), num_res_blocks=1)
    sde = build_sde(cfg, (1, 8, 8))
    model = build_score_model(cfg, sde, (1, 8, 8)).eval()
    x, t = torch.randn(11, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.rand(11)
    sizes = []
    model.register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))
    with torch.no_grad():
        whole = model(x, t)
        chunked, scalar_t = in_chunks(model, 4)(x, t), in_chunks(model, 4)(x, t[3])
        one = model(x, t[3].expand(11))
    assert sizes == [11, 4, 4, 3, 4, 4, 3, 11]
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scalar_t, one, rtol=1e-5, atol=1e-6)
