"""The docs site: generated pages are current, the API page names every public name, every
```python block runs, and (where mkdocs is installed) the site builds strictly."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import scorepde as sp

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
BLOCKS = [
    (page.name, i, code)
    for page in PAGES
    for i, code in enumerate(re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M))
]


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_generated_regions_are_current(page):
    text = page.read_text()
    assert _generator().render(text) == text, f"{page.name} is stale: run python docs/generate.py"


def test_figures_are_copies_of_the_committed_results():
    gen = _generator()
    for copy, source in gen.FIGURES.items():
        assert (DOCS / copy).read_bytes() == (ROOT / source).read_bytes(), (
            f"run python docs/generate.py ({copy})"
        )


def test_generator_fills_an_emptied_region():
    gen = _generator()
    page = "<!-- generated: finetune image/results/finetune_mnist_32k_eval512 -->\n<!-- /generated -->"
    out = gen.render(page)
    assert "| FP, β = 0.1 |" in out and out.startswith(page.split("\n")[0])


def test_verdict_sets_the_paper_beside_ours_and_flags_a_short_budget():
    """mnist-10k's 4 fine-tuning epochs are below the paper's 100, digits' 100 are not; the
    paper's column is Table 5's VP MNIST (3.27 vanilla, 3.01 at β = 0.1)."""
    out = _generator().verdict("image/results/finetune_digits image/results/finetune_mnist_32k_eval512")
    rows = {
        r.split(" | ")[0] + " " + r.split(" | ")[5]: r
        for r in out.splitlines()
        if r.startswith("| digits") or r.startswith("| mnist")
    }
    assert "below the paper's budget" in rows["| mnist (mnist-10k) 0.1"]
    assert "below" not in rows["| digits 0.1"] and "3.27 → 3.01 (−0.26)" in rows["| digits 0.1"]
    assert "Table 5, fine-tuned" in rows["| digits 1.0"] and len(rows) == 6


def test_verdict_pairs_a_scratch_row_with_the_dsm_of_its_own_seeds():
    """From scratch every seed is its own base: the DSM side is the mean over the bases the FP
    row pairs with, not the first base's alone."""
    m = {
        "dsm_by_base": {
            "a": {"bpd": {"mean": 2.0}, "heldout_dsm": 8.0, "r_fp": [1.0, 3.0]},
            "b": {"bpd": {"mean": 1.0}, "heldout_dsm": 6.0, "r_fp": [3.0, 5.0]},
            "c": {"bpd": {"mean": 9.0}, "heldout_dsm": 9.0, "r_fp": [9.0, 9.0]},
        }
    }
    dsm = _generator()._paired_dsm(m, {"base_ids": ["a", "b"]})
    assert dsm == {"bpd": {"mean": 1.5}, "heldout_dsm": 7.0, "r_fp": [2.0, 4.0]}
    assert _generator()._paired_dsm(m, {"base_ids": ["c", "c"]}) is m["dsm_by_base"]["c"]


def test_a_region_without_argument_ends_at_its_own_marker():
    page = "<!-- generated: presets -->\n<!-- /generated -->\nKEEP\n<!-- generated: presets -->\nold\n<!-- /generated -->\n"
    out = _generator().render(page)
    assert "KEEP" in out and "old" not in out and out.count("| `toy` |") == 2


def test_api_page_lists_every_public_name():
    text = (DOCS / "api.md").read_text()
    documented = set(re.findall(r"^::: scorepde\.(\w+)$", text, flags=re.M))
    assert documented == set(sp.__all__), sorted(set(sp.__all__) ^ documented)


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(f": {page.name}" in nav for page in PAGES), [p.name for p in PAGES if f": {p.name}" not in nav]


@pytest.mark.parametrize("page, index, code", BLOCKS, ids=[f"{p}-{i}" for p, i, _ in BLOCKS])
def test_python_block_runs(page, index, code):
    exec(compile(code, f"docs/{page} python block {index}", "exec"), {})


@pytest.mark.skipif(
    shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is in the docs extra",
)
def test_site_builds_strictly_with_every_public_name(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tmp_path / "api" / "index.html").read_text()
    missing = [n for n in sp.__all__ if f'id="scorepde.{n}"' not in html]
    assert not missing, f"the API page renders no entry for {missing}"
