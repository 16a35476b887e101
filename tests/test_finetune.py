"""image/finetune.py: help, one-line errors, and (slow) the whole protocol at a tiny size."""

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "image", "finetune.py")
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}


def _load(path):
    with open(path) as f:
        return json.load(f)


def run(*args, timeout=1200):
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def test_help_names_every_phase():
    proc = run("--help")
    assert proc.returncode == 0
    for flag in ("--base-stages", "--steps", "--betas", "--eval-repeats", "--rtol", "--shard", "--report"):
        assert flag in proc.stdout


@pytest.mark.parametrize(
    "args,match",
    [
        (["--betas", "0"], "positive"),
        (["--base-steps", "3"], "not one of --base-stages"),
        (["--shard", "2/2"], "shard"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, match):
    proc = run("--out", str(tmp_path), *args)
    assert proc.returncode == 2 and match in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # two base stages, four tiny fine-tunings, five evaluations: minutes
def test_tiny_protocol_end_to_end(tmp_path):
    out = tmp_path / "ft"
    args = [
        "--out",
        str(out),
        "--base-stages",
        "10",
        "20",
        "--steps",
        "6",
        "--seeds",
        "2",
        "--betas",
        "0.1",
        "--eval-images",
        "8",
        "--eval-repeats",
        "2",
        "--rtol",
        "1e-3",
        "--residual-images",
        "4",
        "--heldout-repeats",
        "2",
        "--no-progress",
        "--base-args",
        "--sample-steps 2 --n-samples 4 --warmup 2 --no-progress",
    ]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = _load(out / "metrics.json")
    assert [c["steps"] for c in m["base_curve"]] == [10, 20] and m["base_steps"] == 20
    e = m["betas"]["0.1"]
    assert e["seeds"] == [0, 1] and len(e["paired"]["diffs"]) == 2
    assert e["paired"]["mean"] == pytest.approx(
        sum(e["bpd_per_seed"]) / 2 - sum(m["dsm"]["bpd_per_seed"]) / 2
    )
    assert {"base_curve.png", "bpd_vs_beta.png", "finetune_curves.png"} <= set(os.listdir(out))
    kept = [out / "base" / "stage_20.pt", *sorted((out / "ckpt").glob("*.final.pt"))]
    assert len(kept) == 5 and all(
        "model" in torch.load(p, weights_only=True) for p in kept
    )  # no code in them
    again = run(*args)  # everything done: nothing retrains
    assert again.returncode == 0 and "4 of 4 runs done" in again.stdout
    # a shard other than 0 owns no base evaluation (here no run at all): it must not evaluate the base
    report = (out / "metrics.json").read_text()
    idle = run(
        *args, "--eval-images", "4", "--seed", "5", "--seeds", "1", "--shard", "2/3"
    )  # 2 runs: none here
    assert idle.returncode == 0 and "0 of 0 runs done" in idle.stdout
    assert not [f for f in os.listdir(out / "runs") if "images=4" in f]
    # nor may a shard, which sees its own grid only, overwrite the folder's report
    assert "--report" in idle.stdout and (out / "metrics.json").read_text() == report


def _fake_run(store, bpd, **key):
    per_image = [bpd + 0.01 * i for i in (-1, 0, 1)]
    store.save(
        {
            "bpd": bpd,
            "bpd_per_image": per_image,
            "eval_se": 0.001,
            "heldout_dsm": 2.0,
            "residual_curves": {"r_fp": [1.0], "r_dsm": [1.0]},
            "bpd_per_repeat": [bpd],
            "curve": [{"step": 1, "dsm": 2.0}],
            "train_s": 1.0,
        },
        **key,
    )


def test_report_pairs_only_runs_from_the_same_base(tmp_path):
    """Two retrained bases (A, B): FP seed 0 from A pairs with DSM seed 0 from A, never B's."""
    from scorepde.runstore import RunStore

    store = RunStore(str(tmp_path / "runs"))
    ev = dict(images=8, reps=2, rtol=1e-3)
    tune = lambda bid, beta, seed: dict(
        phase="tune",
        data="digits",
        base=20,
        base_id=bid,  # noqa: E731
        beta=beta,
        seed=seed,
        steps=6,
        sub="all",
        **ev,
    )
    _fake_run(store, 2.0, **tune("A", 0.0, 0))
    _fake_run(store, 3.0, **tune("B", 0.0, 0))
    _fake_run(store, 2.5, **tune("B", 0.0, 1))
    _fake_run(store, 2.1, **tune("A", 0.1, 0))
    _fake_run(store, 2.7, **tune("B", 0.1, 1))
    _fake_run(store, 9.0, **{**tune("A", 0.1, 1), "steps": 7})  # other fine-tuning length: not this grid
    proc = run(
        "--out",
        str(tmp_path),
        "--report",
        "--base-stages",
        "10",
        "20",
        "--steps",
        "6",
        "--seeds",
        "2",
        "--betas",
        "0.1",
        "--eval-images",
        "8",
        "--eval-repeats",
        "2",
        "--rtol",
        "1e-3",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    e = _load(tmp_path / "metrics.json")["betas"]["0.1"]
    assert sorted(zip(e["paired"]["seeds"], e["paired"]["base_ids"])) == [(0, "A"), (1, "B")]
    assert sorted(e["paired"]["diffs"]) == pytest.approx([0.1, 0.2])
    by_base = _load(tmp_path / "metrics.json")["dsm_by_base"]
    assert {b: v["bpd_per_seed"] for b, v in by_base.items()} == {"A": [2.0], "B": pytest.approx([3.0, 2.5])}


@pytest.mark.slow  # one base stage, two tiny fine-tunings, evaluated in two rounds: minutes
def test_chunks_extend_an_evaluation_without_retraining(tmp_path):
    """--eval-images 4, then 8 in chunks of 4: the first chunk is the earlier evaluation, the
    second re-uses the kept weights, and the report pools both chunks image by image."""
    out = tmp_path / "ft"
    args = [
        "--out",
        str(out),
        "--base-stages",
        "10",
        "--steps",
        "4",
        "--seeds",
        "1",
        "--betas",
        "0.1",
        "--eval-repeats",
        "2",
        "--rtol",
        "1e-3",
        "--residual-images",
        "2",
        "--heldout-repeats",
        "2",
        "--no-progress",
        "--base-args",
        "--sample-steps 2 --n-samples 4 --warmup 2 --no-progress",
    ]
    first = run(*args, "--eval-images", "4")
    assert first.returncode == 0, first.stderr[-3000:]
    runs = out / "runs"
    done = {p.name: p.stat().st_mtime_ns for p in runs.glob("*__images=4__*")}  # base and 2 fine-tunes
    more = run(*args, "--eval-images", "8", "--eval-chunk", "4")
    assert more.returncode == 0, more.stderr[-3000:]
    assert len(done) == 3 and done == {p.name: p.stat().st_mtime_ns for p in runs.glob("*__images=4__*")}
    for beta in ("0.0", "0.1"):
        name = lambda images: next(runs.glob(f"phase=tune*beta={beta}__*images={images}__*"))  # noqa: E731
        a, b = (_load(name(i)) for i in ("4", "4-8"))
        assert a["eval_chunk"] == [0, 4] and b["eval_chunk"] == [4, 8]
        assert a["train_s"] == b["train_s"] and a["curve"] == b["curve"]  # loaded, not retrained
        assert a["weights_id"] == b["weights_id"] and a["heldout_dsm"] == b["heldout_dsm"]
    m = _load(out / "metrics.json")
    assert m["eval_chunks"] == [[0, 4], [4, 8]]
    dsm = [_load(next(runs.glob(f"phase=tune*beta=0.0__*images={i}__*"))) for i in ("4", "4-8")]
    assert m["dsm"]["bpd_per_seed"][0] == pytest.approx(
        sum(dsm[0]["bpd_per_image"] + dsm[1]["bpd_per_image"]) / 8
    )
    assert m["dsm"]["bpd_per_seed"][0] != pytest.approx(dsm[0]["bpd"])
    # chunks that are not one model (here: a tampered held-out loss) are refused, not pooled
    path = next(runs.glob("phase=tune*beta=0.1__*images=4-8__*"))
    rec = _load(path)
    path.write_text(json.dumps({**rec, "heldout_dsm": rec["heldout_dsm"] + 1e-6}))
    bad = run(*args, "--eval-images", "8", "--eval-chunk", "4", "--report")
    assert bad.returncode == 2 and "disagree" in bad.stderr and "Traceback" not in bad.stderr


def test_report_pools_chunks_of_one_model_only(tmp_path):
    """Two chunks of one model pool image by image, also when the first predates weights ids;
    two chunks with different weights ids are refused."""
    from scorepde.runstore import RunStore

    store = RunStore(str(tmp_path / "runs"))
    key = lambda beta, images: dict(
        phase="tune",
        data="digits",
        base=20,
        base_id="A",
        beta=beta,  # noqa: E731
        seed=0,
        steps=6,
        sub="all",
        images=images,
        reps=2,
        rtol=1e-3,
    )
    for beta, bpd in ((0.0, 2.0), (0.1, 2.5)):
        _fake_run(store, bpd, **key(beta, 3))  # no weights_id: an older run
        _fake_run(store, bpd + 0.3, **key(beta, "3-6"))
        store.save({**store.load(**key(beta, "3-6")), "weights_id": f"w{beta}"}, **key(beta, "3-6"))
    args = [
        "--out",
        str(tmp_path),
        "--report",
        "--base-stages",
        "20",
        "--steps",
        "6",
        "--seeds",
        "1",
        "--betas",
        "0.1",
        "--eval-images",
        "6",
        "--eval-chunk",
        "3",
        "--eval-repeats",
        "2",
        "--rtol",
        "1e-3",
    ]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    e = _load(tmp_path / "metrics.json")["betas"]["0.1"]
    assert e["bpd_per_seed"] == pytest.approx([2.65]) and e["paired"]["diffs"] == pytest.approx([0.5])
    store.save({**store.load(**key(0.1, 3)), "weights_id": "other"}, **key(0.1, 3))
    bad = run(*args)
    assert bad.returncode == 2 and "disagree" in bad.stderr and "Traceback" not in bad.stderr


def test_base_stage_resumes_after_training_finished_but_before_its_evaluation(tmp_path):
    """Interrupted between the base's last training step and its stage's run file, the grid
    evaluates the stage instead of asking the trainer for zero more steps (which it refuses)."""
    out = tmp_path / "ft"
    args = ["--out", str(out), "--base-stages", "2", "--base-only", "--heldout-repeats", "1", "--no-progress"]
    args += ["--base-args", "--sample-steps 2 --n-samples 4 --warmup 1 --no-progress"]
    first = run(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    (run_file,) = (out / "runs").glob("phase=base*")
    held = _load(run_file)["heldout_dsm"]
    run_file.unlink()
    (out / "base" / "stage_2.pt").unlink()
    again = run(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "base: DSM to step" not in again.stdout  # not trained again
    assert _load(run_file)["heldout_dsm"] == pytest.approx(held)  # the same weights, evaluated again
