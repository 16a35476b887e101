"""The new user's path through the scripts (issue 13): every mistake a user can make on the
command line ends in one line that says what is wrong and what to do; defaults keep a
recent checkpoint, never overwrite a run, and scale the final evaluation to the run.

Scripts run in-process (``main(argv)``) with a tiny U-Net and a few steps; one run is shared
by the tests that only need a checkpoint.
"""

import argparse
import importlib.util
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import scorepde as sp
from scorepde.training import JsonlLog, fit, load_checkpoint, make_optimizer

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--channels",
    "4",
    "--channel-mult",
    "1",
    "--attention",
    "0",
    "--batch-size",
    "8",
    "--threads",
    "1",
    "--no-progress",
    "--sample-steps",
    "2",
    "--n-samples",
    "4",
]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


import scorepde.commands.train as train  # noqa: E402  (image/train.py is a shim over it)
from scorepde.commands import bench_bpd as bench  # noqa: E402
from scorepde.commands import eval as evaluate  # noqa: E402


def one_line_error(capsys, call, *needles):
    """``call()`` exits with status 2 and one stderr line ``error: ...`` holding every needle."""
    with pytest.raises(SystemExit) as e:
        call()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished 2-step run (no evaluation) whose checkpoint the tests read or damage copies of."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert train.main(TINY + ["--steps", "2", "--out", str(out), "--eval-images", "-1"]) == 0
    return out


# 1. A corrupt checkpoint names the file and says it is not a readable checkpoint.
def _bad_checkpoints(run_dir, tmp_path):
    good = (run_dir / "checkpoint.pt").read_bytes()
    bad = {
        "random": np.random.default_rng(0).bytes(4096),
        "text": b"step,loss\n1,2.5\n",
        "truncated": good[: len(good) // 2],
    }
    for name, data in bad.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "checkpoint.pt").write_bytes(data)
    return list(bad)


def test_corrupt_checkpoint_is_named_by_eval_and_resume(run_dir, tmp_path, capsys):
    for name in _bad_checkpoints(run_dir, tmp_path):
        path = str(tmp_path / name / "checkpoint.pt")
        one_line_error(
            capsys,
            lambda: evaluate.main([path, "--images", "-1"]),
            path,
            "not a readable scorepde checkpoint",
        )
        one_line_error(
            capsys,
            lambda: train.main(TINY + ["--resume", "--out", str(tmp_path / name)]),
            path,
            "not a readable scorepde checkpoint",
        )
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(str(tmp_path / "random" / "checkpoint.pt"))


def test_corrupt_checkpoint_from_the_shell_is_one_line(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"\x00garbage" * 100)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "image" / "eval.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and str(path) in proc.stderr, proc.stderr


# 2. --device cuda without CUDA: one line from every script.
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line(run_dir, tmp_path, capsys):
    one_line_error(
        capsys, lambda: evaluate.main([str(run_dir / "checkpoint.pt"), "--device", "cuda"]), "--device cpu"
    )
    one_line_error(
        capsys, lambda: train.main(TINY + ["--device", "cuda", "--out", str(tmp_path / "c")]), "--device cpu"
    )
    assert not (tmp_path / "c").exists()


# 3. --data-dir is the dataset's folder or its parent, in every script.
def _write_idx(path, array, magic):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def _fake_idx_set(folder: Path, n: int = 4):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        _write_idx(
            folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 0x803
        )
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8), 0x801)


def test_data_dir_is_the_dataset_folder_or_its_parent(tmp_path):
    _fake_idx_set(tmp_path / "fashion-mnist")
    _fake_idx_set(tmp_path / "mnist-10k")
    own = sp.load_dataset("fashion-mnist", "train", tmp_path / "fashion-mnist")
    parent = sp.load_dataset("fashion-mnist", "test", tmp_path)  # finds fashion-mnist/ inside
    assert len(own) == len(parent) == 4
    with pytest.raises(FileNotFoundError) as err:  # no mnist/ here, but the error points at mnist-10k/
        sp.load_dataset("mnist", "train", tmp_path)
    assert str(tmp_path / "mnist-10k") in str(err.value) and "--data-dir" in str(err.value)
    # bench_bpd.py takes the parent or, for one dataset, the dataset's own folder
    assert "its own folder" in " ".join(_parser_of(lambda: bench.parse_args([])).format_help().split())


# 4. The default evaluation is scaled to the run; short runs say how to get one.
def test_short_runs_skip_the_default_evaluation_and_say_so(run_dir, tmp_path, capsys):
    from scorepde.image_eval import auto_eval_images

    assert auto_eval_images(2000) == 64 and auto_eval_images(400) == 25 and auto_eval_images(20) == -1
    out = tmp_path / "short"
    assert train.main(TINY + ["--steps", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "--eval-images" in err and "image/eval.py" in err
    assert "bpd" not in json.loads((out / "metrics.json").read_text())


# 5. Checkpoints by time as well as by steps; messages name the flags that exist.
def test_checkpoints_by_time_as_well_as_by_steps(tmp_path, monkeypatch):
    saved = []
    import scorepde.training as training  # where fit saves

    real = training.save_checkpoint
    monkeypatch.setattr(
        training, "save_checkpoint", lambda path, state: (saved.append(state["step"]), real(path, state))
    )
    assert (
        train.main(
            TINY
            + ["--steps", "3", "--ckpt-seconds", "0", "--out", str(tmp_path / "a"), "--eval-images", "-1"]
        )
        == 0
    )
    assert saved[:3] == [1, 2, 3]  # every step is "due" at 0 s, though --ckpt-every is 500
    saved.clear()
    assert train.main(TINY + ["--steps", "3", "--out", str(tmp_path / "b"), "--eval-images", "-1"]) == 0
    assert saved == [3]  # the defaults: not yet 500 steps nor 60 s, so only the final one


@pytest.mark.slow
def test_sigkill_with_default_step_interval_leaves_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "image" / "train.py"),
            *TINY,
            "--steps",
            "100000",
            "--ckpt-seconds",
            "1",
            "--out",
            str(out),
            "--eval-images",
            "-1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    ckpt, deadline = out / "checkpoint.pt", time.time() + 120
    while time.time() < deadline and not ckpt.is_file() and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    step = load_checkpoint(str(ckpt))["step"]
    assert 0 < step < 500  # saved by time, long before the step interval
    assert (
        train.main(TINY + ["--resume", "--steps", str(step + 1), "--out", str(out), "--eval-images", "-1"])
        == 0
    )
    capsys.readouterr()
    one_line_error(
        capsys,
        lambda: train.main(TINY + ["--resume", "--steps", str(step + 1), "--out", str(out)]),
        "--steps above",
    )


def test_resume_messages_name_the_flags(run_dir, tmp_path, capsys):
    line = one_line_error(
        capsys,
        lambda: train.main(TINY + ["--resume", "--out", str(tmp_path / "none")]),
        "--resume",
        "drop --resume",
    )
    assert ".pt file" not in line
    one_line_error(
        capsys,
        lambda: train.main(TINY + ["--resume", "--steps", "2", "--out", str(run_dir)]),
        "at step 2 already",
        "--steps above 2",
    )


def test_help_shows_the_checkpoint_defaults(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 500)" in text and "--ckpt-seconds" in text and "(default 60" in text


# 6. An existing run is never overwritten silently.
def test_existing_out_is_refused_without_overwrite(run_dir, tmp_path, capsys):
    before = (run_dir / "checkpoint.pt").read_bytes()
    one_line_error(
        capsys,
        lambda: train.main(TINY + ["--steps", "1", "--out", str(run_dir)]),
        "already holds results",
        "--resume",
        "--overwrite",
    )
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "checkpoint.pt").write_bytes(before)
    (copy / "samples_0000001.png").write_bytes(b"old")
    assert train.main(TINY + ["--steps", "1", "--out", str(copy), "--overwrite", "--eval-images", "-1"]) == 0
    assert load_checkpoint(str(copy / "checkpoint.pt"))["step"] == 1
    assert not (copy / "samples_0000001.png").exists()


# 7. Choices come from the library's tables.
def test_choices_come_from_estimators_and_presets():
    from scorepde.losses import PAPER_SETTINGS

    for name in sp.ESTIMATORS:
        assert train.parse_args(["--estimator", name]).estimator == name
        assert evaluate.parse_args(["ckpt", "--residual-estimator", name]).residual_estimator == name
    for name in PAPER_SETTINGS:
        assert train.parse_args(["--preset", name]).preset == name
    args = train.parse_args(
        [
            "--preset",
            "mnist",
            "--beta",
            "0.5",
            "--normalize",
            "none",
            "--gamma-reduction",
            "mean_abs",
            "--dsm-weighting",
            "g2",
        ]
    )
    cfg = train.make_config(args)
    assert cfg["objective"] == "fp" and cfg["beta"] == 0.5 and cfg["normalize"] == "none"
    assert cfg["rhs_reduction"] == "mean_abs" and cfg["dsm_weighting"] == "g2" and cfg["preset"] == "mnist"
    assert cfg["t_eps"] == PAPER_SETTINGS["mnist"]["eps"]


def test_forward_fd_trains_from_the_cli(tmp_path):
    out = tmp_path / "ffd"
    assert (
        train.main(
            TINY
            + [
                "--steps",
                "1",
                "--objective",
                "fp",
                "--estimator",
                "forward_fd",
                "--subbatch",
                "2",
                "--out",
                str(out),
                "--eval-images",
                "-1",
            ]
        )
        == 0
    )
    assert JsonlLog.read(str(out / "log.jsonl"))[0]["fp"] > 0


# 8. Bad numbers: one condition per message, flags named as flags.
@pytest.mark.parametrize(
    "flags, needle, absent",
    [
        (["--lr", "-0.001"], "lr must be > 0", "ema"),
        (["--ema-decay", "1"], "ema-decay must lie in [0, 1)", "lr"),
        (["--steps", "0"], "steps must be >= 1", None),
        (["--data-dir", "/nonexistent"], "drop --data-dir", None),
        (["--dataset", "mnist"], "--data-dir", None),
        (["--ckpt-every", "0"], "--ckpt-every", None),
        (["--channel-mult", "1,x"], "--channel-mult must be comma-separated integers", None),
        (["--ckpt-seconds", "-1"], "--ckpt-seconds must be >= 0", "rtol"),
        (["--sample-steps", "0"], "--sample-steps must be >= 1", None),
        (["--batch-size", "5000"], "lower --batch-size", None),
    ],
)
def test_bad_numbers_are_named(tmp_path, capsys, flags, needle, absent):
    out = tmp_path / "o"
    line = one_line_error(capsys, lambda: train.main(TINY + flags + ["--out", str(out)]), needle)
    assert absent is None or absent not in line  # one condition per message
    assert not (out / "samples.png").exists()


def test_eval_bad_numbers_are_named(run_dir, capsys):
    ckpt = str(run_dir / "checkpoint.pt")
    one_line_error(capsys, lambda: evaluate.main([ckpt, "--repeats", "0"]), "--repeats must be >= 1")
    one_line_error(capsys, lambda: evaluate.main([ckpt, "--rtol", "0"]), "--rtol must be > 0")


# 10. --help: every flag has help, no doubled defaults (toy and image scripts).
class _Captured(Exception):
    pass


def _parser_of(call):
    """The ArgumentParser a script builds, caught when it parses."""
    seen = {}

    def grab(self, *a, **k):
        seen["parser"] = self
        raise _Captured

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = grab
    try:
        call()
    except _Captured:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    return seen["parser"]


def _toy_parsers():
    saved = sys.modules.pop("_common", None)  # toy/ and benchmarks/ each have a _common
    try:
        for name in ("cauchy_gmm", "density", "conservativity"):
            module = _load(ROOT / "toy" / f"{name}.py", f"cli_toy_{name}")
            yield name, _parser_of(lambda: module.main([]))
    finally:
        sys.modules.pop("_common", None)
        if saved is not None:
            sys.modules["_common"] = saved
        while str(ROOT / "toy") in sys.path:
            sys.path.remove(str(ROOT / "toy"))


def test_every_flag_has_help_and_one_default():
    parsers = dict(_toy_parsers())
    parsers.update(
        train=_parser_of(lambda: train.parse_args([])),
        eval=_parser_of(lambda: evaluate.parse_args([])),
        bench=_parser_of(lambda: bench.parse_args([])),
    )
    for name, parser in parsers.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name}: {action.option_strings} has no help"
            text = formatter._get_help_string(action) % {
                "default": action.default,
                "prog": "x",
                "choices": action.choices,
            }
            assert text.count("(default") <= 1, f"{name}: {action.option_strings}: {text}"


# 11. Where the output went.
def test_run_says_where_it_wrote(tmp_path, capsys):
    out = tmp_path / "w"
    assert train.main(TINY + ["--steps", "1", "--out", str(out), "--eval-images", "-1"]) == 0
    assert f"results in {out}" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["out"] == str(out)
    assert json.loads((out / "config.json").read_text())["out"] == str(out)
    from scorepde.commands._toy import setup

    args = argparse.Namespace(out=None, device="cpu", threads=None)
    folder = setup(args, "cli_test_default")
    assert os.path.isabs(folder) and folder.endswith(os.path.join("out", "cli_test_default"))
    assert args.out == os.path.join(
        "out", "cli_test_default"
    )  # recorded as given: not null, not this machine's path
    os.rmdir(folder)


# 12. Figures: training curves and titles.
def test_training_curves_and_titled_samples(run_dir, tmp_path):
    import matplotlib.image as mpimg

    from scorepde.plotting import save_grid

    assert (run_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    k = torch.randint(0, 17, (4, 1, 8, 8), dtype=torch.uint8)
    plain = mpimg.imread(save_grid(k, 17, str(tmp_path / "a.png")))
    titled = mpimg.imread(save_grid(k, 17, str(tmp_path / "b.png"), title="a title"))
    assert titled.shape[0] > plain.shape[0]  # room for the title above the grid
    from scorepde.plotting import training_curves

    recs = [
        {"step": i, "loss": 2.0 - i / 10, "dsm": 1.5, "fp": 0.5, "fp_residual": 1.0, "lr": 1e-3}
        for i in range(5)
    ]
    assert os.path.isfile(training_curves(recs, str(tmp_path / "c.png"), title="t"))


# 13. The progress bar shows the number the log holds (under DDP, the mean over ranks).
def test_progress_bar_shows_what_on_step_returns(capsys):
    model = torch.nn.Linear(2, 2)
    opt, _ = make_optimizer(model.parameters(), lr=1e-3)
    objective = lambda x, g: (model(x).pow(2).mean(), {})
    batches = iter(lambda: torch.ones(4, 2), None)
    fit(objective, opt, batches, 2, progress=True, on_step=lambda step, log: {"loss": 12345.0})
    assert "1.234e+04" in capsys.readouterr().err


# 14. No ± from one repeat; the line names images, repeats and the wall time.
def test_bpd_line_has_no_error_bar_from_one_repeat():
    from scorepde.image_eval import bpd_summary

    one = bpd_summary({"bpd": 2.0, "per_repeat": [2.0]}, 359, 1, 12.3)
    assert "±" not in one and "359 test images" in one and "12.3 s" in one
    two = bpd_summary({"bpd": 2.0, "per_repeat": [1.9, 2.1, 1.9, 2.1]}, 359, 4, 12.3)
    assert "± 0.0577" in two and "standard error" in two  # 0.2/√3 / √4


@pytest.mark.slow
def test_eval_prints_the_whole_line(run_dir, tmp_path, capsys):
    assert (
        evaluate.main(
            [
                str(run_dir / "checkpoint.pt"),
                "--out",
                str(tmp_path / "e"),
                "--images",
                "2",
                "--repeats",
                "1",
                "--rtol",
                "1e-2",
                "--residual-images",
                "0",
                "--n-samples",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "2 test images × 1 repeat" in out and "±" not in out and " s, " in out


# 15. Console commands live in the package (a wheel needs no checkout); the scripts are shims.
#: console command → (module under scorepde.commands, the checkout's script that is its shim)
COMMANDS = {
    "scorepde-train": ("train", "image/train.py"),
    "scorepde-finetune": ("finetune", "image/finetune.py"),
    "scorepde-eval": ("eval", "image/eval.py"),
    "scorepde-bench-bpd": ("bench_bpd", "image/bench_bpd.py"),
    "scorepde-cauchy": ("cauchy", "toy/cauchy_gmm.py"),
    "scorepde-conservativity": ("conservativity", "toy/conservativity.py"),
    "scorepde-density": ("density", "toy/density.py"),
    "scorepde-step-cost": ("step_cost", "benchmarks/step_cost.py"),
    "scorepde-estimator-error": ("estimator_error", "benchmarks/estimator_error.py"),
}


def test_console_commands_map_to_the_package():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {
        **{c: f"scorepde.commands.{m}:main" for c, (m, _) in COMMANDS.items()},
        "scorepde-audit": "scorepde.audit:main",
    }
    # cli.py is plumbing only: it runs no script by path (nothing in the package does)
    for path in (ROOT / "scorepde").rglob("*.py"):
        assert "runpy" not in path.read_text(), f"{path.relative_to(ROOT)} runs code by path (runpy)"


@pytest.mark.parametrize("command", sorted(COMMANDS) + ["scorepde-audit"])
def test_console_command_helps_and_its_script_is_a_shim(command, capsys):
    import importlib

    module = "scorepde.audit" if command == "scorepde-audit" else f"scorepde.commands.{COMMANDS[command][0]}"
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out
    if command != "scorepde-audit":
        shim = (ROOT / COMMANDS[command][1]).read_text()
        assert f"from {module} import main" in shim and len(shim.splitlines()) <= 20, (
            f"{COMMANDS[command][1]} should be a thin shim over {module}.main"
        )


# 8, for the toy scripts: their shared numeric flags are checked in scorepde.commands._toy.setup.
@pytest.mark.parametrize(
    "script, flags, needle",
    [
        ("cauchy_gmm", ["--steps", "0"], "--steps must be positive"),
        ("conservativity", ["--lr", "-1"], "--lr must be positive"),
        ("density", ["--quick", "--batch-size", "0"], "--batch-size must be positive"),
    ],
)
def test_toy_bad_numbers_are_one_line(tmp_path, script, flags, needle):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "toy" / f"{script}.py"), *flags, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]


def test_density_keeps_another_budgets_report(tmp_path):
    """toy/density.py writes one budget's report into --out: a run of another budget there
    stops at once with one line naming the fix, and the first report is untouched."""
    out = tmp_path / "out"
    out.mkdir()
    report = json.dumps({"config": {"budget": "small"}, "gmm8": {}})
    (out / "metrics.json").write_text(report)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "toy" / "density.py"), "--quick", "--report", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "its own --out" in lines[0], proc.stderr[-2000:]
    assert (out / "metrics.json").read_text() == report


# 16. The shared parser: defaults shown once, shared help filled in where a flag has none.
def test_shared_parser_help(capsys):
    from scorepde.cli import add_run_flags, parser

    p = parser("demo", shared_help={"--lr": "the learning rate"})
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=5, help="steps (default: 5 here)")
    add_run_flags(p)
    text = p.format_help()
    assert "the learning rate (default: 0.01)" in text
    assert "(default: 5 here)" in text and "(default: 5)" not in text  # stated once
    assert "(default: False)" not in text and "(default: None)" not in text
    args = p.parse_args(["--quick", "--out", "x"])
    assert args.quick and args.out == "x" and args.seed == 0 and args.device == "cpu"


@pytest.mark.parametrize("command", ["scorepde-train", "scorepde-cauchy"])
def test_console_usage_names_the_command(command):
    """Issue 32's trial: the console commands said `usage: train.py` (they ran the script file)."""
    import shutil
    import subprocess

    exe = shutil.which(command) or shutil.which(command, path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip(f"{command} is not installed in this environment (pip install -e .)")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120).stdout
    assert out.startswith(f"usage: {command} "), out[:200]
