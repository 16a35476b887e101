"""Each example in examples/ runs, at a tiny size, and shows what it says it shows."""

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetune_diffusers_lowers_the_residual_and_saves_the_unet(tmp_path, capsys):
    pytest.importorskip("diffusers")
    # Tiny but seeded: 40 DSM steps, then 15 FP steps at β = 1 (the top of the paper's MNIST
    # sweep, in its units); r_FP fell at every t on seeds 0, 1, 2 (by 13-73%).
    argv = [
        "--dsm-steps",
        "40",
        "--fp-steps",
        "15",
        "--batch-size",
        "16",
        "--audit-images",
        "16",
        "--beta",
        "1.0",
        "--seed",
        "0",
        "--out",
        str(tmp_path / "unet"),
    ]
    r = load("finetune_diffusers").main(argv)
    ratios = [a / b for a, b in zip(r["after"], r["before"])]
    assert all(q < 1 for q in ratios), f"r_FP(t) after / before: {ratios}"
    assert math.exp(sum(map(math.log, ratios)) / len(ratios)) < 0.85
    assert "r_FP before" in capsys.readouterr().out
    from diffusers import UNet2DModel

    assert UNet2DModel.from_pretrained(tmp_path / "unet").config.sample_size == 8


def test_audit_edm_separates_the_ideal_denoiser_from_a_trained_one():
    r = load("audit_edm").main(["--steps", "50", "--points", "32"])
    assert max(r["r_fp_ideal"]) < 1e-6  # the closed-form denoiser's score solves the score FPE
    assert min(r["r_fp_trained"]) > 1e-3 and all(map(math.isfinite, r["r_fp_trained"]))


def test_custom_sde_residual_and_likelihood():
    r = load("custom_sde").main(["--points", "16"])
    assert r["eps_exact"] < 1e-8 < 1 < r["eps_frozen"]
    assert r["ll_gap"] < 0.02
