"""Regenerate every generated part of the docs from committed results: ``python docs/generate.py``.

A page marks a generated region with two HTML comments::

    <!-- generated: KIND ARG -->
    ...replaced on each run...
    <!-- /generated -->

KIND is ``include`` (ARG: a report a script wrote from its run files, e.g. a ``summary.md`` or
``table.md`` beside its ``metrics.json``), ``finetune`` (ARG: a ``image/finetune.py`` output
folder; the table is built from its ``metrics.json``), ``api`` (the API reference: one entry
per name in ``scorepde.__all__``), ``properties`` (ARG: a hypothesis test file; each property
with its examples per profile) or ``tests`` (ARG: a test file; each test with its docstring's
first paragraph). The figures in ``FIGURES`` are copied from their results
folders. ``--check`` writes nothing and exits 1 when a committed page
differs from what this script generates (tests/test_docs.py runs it), so a number in the docs
cannot drift from the results it quotes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REGION = re.compile(r"(<!-- generated: (\w+)(?: ([^\n]*?))? -->\n)(.*?)(<!-- /generated -->)", re.S)


def include(arg: str) -> str:
    """A committed report, its headings demoted below the page's own."""
    text = (ROOT / arg).read_text().strip("\n")
    text = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", text, flags=re.M)
    return f"{text}\n\n*Generated from `{arg}`.*\n"


def finetune(arg: str) -> str:
    """The Table 5 fine-tuning table of one ``image/finetune.py`` folder, from its metrics.json."""
    from scorepde.reporting import markdown_table

    m = json.loads((ROOT / arg / "metrics.json").read_text())
    t = m["bases"][next(iter(m["bases"]))]["residual_curves"]["t"]
    mid = min(range(len(t)), key=lambda i: abs(t[i] - 0.5))

    def row(label, rec, paired=True):
        diff = rec.get("paired") if paired else None
        ci = "—" if not diff else f"{diff['mean']:+.4f} [{diff['lo']:+.4f}, {diff['hi']:+.4f}]"
        if diff and (diff["lo"] > 0 or diff["hi"] < 0):
            ci = f"**{ci}**"
        se = f"{rec['eval_se_diff']:.4f}" if diff and rec.get("eval_se_diff") is not None else "—"
        return [
            label,
            f"{rec['bpd']['mean']:.4f}",
            ci.replace("-", "−"),
            se,
            f"{rec['heldout_dsm']:.4f}",
            f"{rec['r_fp'][mid]:.1f}",
        ]

    betas = sorted(m["betas"].items(), key=lambda kv: float(kv[0]))
    by_base = m.get("dsm_by_base")  # each FP row pairs with the DSM seeds of its own base
    rows = []
    for base in dict.fromkeys(rec["base_ids"][0] for _, rec in betas) if by_base else [None]:
        rows.append(
            row(f"DSM (base `{base}`)" if base else "DSM", by_base[base] if base else m["dsm"], paired=False)
        )
        rows += [row(f"FP, β = {beta}", rec) for beta, rec in betas if not base or rec["base_ids"][0] == base]
    n = len(betas[0][1]["seeds"])
    headers = [
        "run",
        f"bits/dim ({n} seeds)",
        "FP − DSM, paired [95% CI]",
        "eval SE of the difference",
        "held-out DSM",
        f"r_FP(t = {t[mid]:g})",
    ]
    return (
        f"{markdown_table(headers, rows)}\n\n*Generated from `{arg}/metrics.json`: "
        f"{m['dataset']}, {m['finetune_steps']} fine-tuning steps from the {m['base_steps']}-step base.*\n"
    )


def api(_: str) -> str:
    """One mkdocstrings entry per public name, grouped by the module that defines it."""
    import scorepde as sp

    groups: dict[str, list[str]] = {}
    for name in sp.__all__:
        obj = getattr(sp, name)
        module = obj.__name__ if name == "nn" else getattr(obj, "__module__", None) or "scorepde"
        if not module.startswith("scorepde"):
            module = "scorepde"
        groups.setdefault(module.split(".")[1] if "." in module else "constants", []).append(name)
    out = []
    for group, names in groups.items():
        out.append(f"## `{group}`\n")
        out += [f"::: scorepde.{name}\n" for name in names]
    return "\n".join(out)


def presets(_: str) -> str:
    """``sp.PAPER_SETTINGS`` and ``sp.DEFAULT_FP`` as a table, one row per preset."""
    from scorepde.losses import DEFAULT_FP, PAPER_SETTINGS
    from scorepde.reporting import markdown_table

    rows = {**PAPER_SETTINGS, "DEFAULT_FP (ours)": DEFAULT_FP}
    keys = list(dict.fromkeys(k for settings in rows.values() for k in settings))
    body = [[f"`{name}`", *(f"`{v[k]!r}`" if k in v else "—" for k in keys)] for name, v in rows.items()]
    return markdown_table(["preset", *keys], body) + "\n\n*Generated from `scorepde/losses.py`.*\n"


def estimators(_: str) -> str:
    """What each named estimator is and needs, asked of the estimator itself."""
    from scorepde.estimators import ESTIMATORS, get_estimator
    from scorepde.reporting import markdown_table

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    rows = []
    for name, (family, preset) in ESTIMATORS.items():
        e = get_estimator(name)
        options = ", ".join(f"{k}={v!r}" for k, v in preset.items())
        rows.append(
            [
                f"`{name}`",
                f"`{family.__name__}`",
                f"`{options}`",
                yes(e.needs_autograd),
                yes(e.needs_forward_mode),
                yes(e.plain_forwards_only),
                e.time_stencil or "exact (jvp)",
                yes(e.stochastic),
            ]
        )
    headers = [
        "name",
        "family",
        "preset",
        "reverse mode in x",
        "forward mode",
        "plain forwards only",
        "∂t s",
        "random draws",
    ]
    return markdown_table(headers, rows) + "\n\n*Generated from `scorepde/estimators/__init__.py`.*\n"


def _hypothesis_tests(tree) -> tuple[dict, list]:
    """(profiles {name: max_examples}, [(test name, its first docstring line, its own max_examples or None)])."""
    import ast

    profiles, tests = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "register_profile":
            kw = {k.arg: k.value for k in node.keywords}
            profiles[node.args[0].value] = kw["max_examples"].value
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
            continue
        own = None
        for d in node.decorator_list:
            if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "settings":
                own = next((k.value.value for k in d.keywords if k.arg == "max_examples"), None)
        doc = (ast.get_docstring(node) or node.name).split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
        tests.append((node.name, doc, own))
    return profiles, tests


def properties(arg: str) -> str:
    """The property tests of ``arg`` (a hypothesis test file) and how many examples each runs per profile."""
    import ast

    from scorepde.reporting import markdown_table

    profiles, tests = _hypothesis_tests(ast.parse((ROOT / arg).read_text()))
    rows = [[f"`{name}`", doc, *(own or n for n in profiles.values())] for name, doc, own in tests]
    headers = ["test", "property", *(f"examples (`{p}`)" for p in profiles)]
    return markdown_table(headers, rows) + f"\n\n*Generated from `{arg}`: each test's `max_examples`.*\n"


def tests(arg: str) -> str:
    """The tests of ``arg``, each with the first paragraph of its docstring where it has one."""
    import ast

    lines = []
    for node in ast.parse((ROOT / arg).read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            doc = ast.get_docstring(node)
            lines.append(f"- `{node.name}`" + (": " + doc.split("\n\n")[0].replace("\n", " ") if doc else ""))
    return "\n".join(lines) + f"\n\n*Generated from `{arg}`.*\n"


KINDS = {
    "include": include,
    "estimators": estimators,
    "finetune": finetune,
    "api": api,
    "presets": presets,
    "properties": properties,
    "tests": tests,
}


#: Figures the pages show, copied from the results they belong to (MkDocs serves only docs/).
FIGURES = {
    "figures/density_checkerboard.png": "toy/results/density_paper/density_checkerboard.png",
    "figures/nll_vs_beta.png": "toy/results/density_paper/nll_vs_beta.png",
    "figures/cauchy_rel_l2_over_t.png": "toy/results/cauchy/rel_l2_over_t.png",
    "figures/audit_compare.png": "image/results/audit_compare/audit.png",
    "figures/audit_training.png": "image/results/audit_training/audit.png",
}


def render(text: str) -> str:
    return REGION.sub(lambda m: m.group(1) + KINDS[m.group(2)]((m.group(3) or "").strip()) + m.group(5), text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is stale")
    args = p.parse_args(argv)
    stale = []
    for page in sorted(DOCS.glob("*.md")):
        old = page.read_text()
        new = render(old)
        if new != old:
            stale.append(page.relative_to(ROOT).as_posix())
            if not args.check:
                page.write_text(new)
    for copy, source in FIGURES.items():
        data = (ROOT / source).read_bytes()
        if not (DOCS / copy).is_file() or (DOCS / copy).read_bytes() != data:
            stale.append(f"docs/{copy}")
            if not args.check:
                (DOCS / copy).parent.mkdir(exist_ok=True)
                (DOCS / copy).write_bytes(data)
    if args.check and stale:
        print("stale generated docs (run python docs/generate.py):", ", ".join(stale))
        return 1
    print(("stale: " if args.check else "regenerated: ") + (", ".join(stale) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
