"""Regenerate every generated part of the docs from committed results: ``python docs/generate.py``.

A page (docs/*.md, and README.md) marks a generated region with two HTML comments::

    <!-- generated: KIND ARG -->
    ...replaced on each run...
    <!-- /generated -->

KIND is ``include`` (ARG: a report a script wrote from its run files, e.g. a ``summary.md`` or
``table.md`` beside its ``metrics.json``), ``finetune`` (ARG: a ``image/finetune.py`` output
folder; the table is built from its ``metrics.json``), ``verdict`` (ARG: several such folders;
one table of the image verdict, the paper's numbers beside ours), ``api`` (the API reference: one
entry per name in ``scorepde.__all__``), ``properties`` (ARG: a hypothesis test file; each property
with its examples per profile), ``norms`` (ARG: lever studies ``FOLDER:CASE:SDE``; rows evaluated
by each likelihood clock and error norm) or ``tests`` (ARG: a test file; each test with its docstring's
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

#: The paper's test bits/dim (Table 1: from scratch, 200 epochs; Table 5: 100 epochs of DSM,
#: then 100 of DSM or FP), by (protocol, data set, SDE), one value per β of PAPER_BETAS (0: vanilla).
#: Transcribed from the paper's text (the extraction drops Greek letters and the first FP
#: row's last digit; its order, 0.001 to 10, is Table 5's). Digits is compared with MNIST.
PAPER_BETAS = (0.0, 0.001, 0.01, 0.1, 1.0, 10.0)
PAPER_BPD = {
    ("scratch", "mnist", "ve"): (3.73, 3.64, 3.58, 3.42, 3.30, 3.31),
    ("scratch", "mnist", "vp"): (3.24, 3.17, 3.12, 2.98, 3.11, 3.21),
    ("scratch", "fashion-mnist", "ve"): (4.76, 4.67, 4.61, 4.40, 4.44, 4.46),
    ("scratch", "fashion-mnist", "vp"): (4.46, 4.50, 4.36, 4.21, 4.36, 4.67),
    ("finetune", "mnist", "ve"): (3.67, 3.63, 3.60, 3.47, 3.23, 3.30),
    ("finetune", "mnist", "vp"): (3.27, 3.15, 3.10, 3.01, 3.09, 3.17),
    ("finetune", "fashion-mnist", "ve"): (4.78, 4.61, 4.58, 4.42, 4.39, 4.41),
    ("finetune", "fashion-mnist", "vp"): (4.49, 4.50, 4.46, 4.23, 4.27, 4.43),
}
#: The paper's training length in epochs: from scratch 200; fine-tuning 100 (after 100 of DSM).
PAPER_EPOCHS = {"scratch": 200, "finetune": 100}
DOCS = ROOT / "docs"
REGION = re.compile(r"(<!-- generated: (\w+)(?: ([^\n]*?))? -->\n)(.*?)(<!-- /generated -->)", re.S)


def include(arg: str) -> str:
    """A committed report, its headings demoted below the page's own."""
    text = (ROOT / arg).read_text().strip("\n")
    text = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", text, flags=re.M)
    return f"{text}\n\n*Generated from `{arg}`.*\n"


def _trained(m: dict) -> str:
    if m.get("protocol") == "scratch":
        return f"{m['sde'].upper()}, {m['finetune_steps']} steps from scratch"
    sde = f"{m['sde'].upper()}, " if "sde" in m else ""
    return f"{sde}{m['finetune_steps']} fine-tuning steps from the {m['base_steps']}-step base"


def finetune(arg: str) -> str:
    """The Table 5 fine-tuning table of one ``image/finetune.py`` folder, from its metrics.json."""
    from scorepde.reporting import markdown_table

    m = json.loads((ROOT / arg / "metrics.json").read_text())
    t = m.get("residual_t") or m["bases"][next(iter(m["bases"]))]["residual_curves"]["t"]
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
        f"{m['dataset']}, {_trained(m)}.*\n"
    )


def _epochs(n: float) -> str:
    """Epochs as a table shows them: whole from 10 up, one decimal below (0.5 is not 1)."""
    return f"{n:.0f}" if n >= 10 else f"{n:.1f}"


def _budget(m: dict) -> str:
    """A folder's training budget in epochs beside the paper's, saying when it is below."""
    paper = PAPER_EPOCHS[m["protocol"]]
    ours = f"{_epochs(m['epochs'])} epochs"
    if m["protocol"] == "finetune":
        ours = f"{_epochs(m['base_epochs'])} + {ours}"
        paper = f"100 + {paper}"
    below = m["epochs"] < 0.95 * PAPER_EPOCHS[m["protocol"]]
    return f"{ours} (paper {paper}: **below the paper's budget**)" if below else f"{ours} (paper {paper})"


def _base_state(m: dict) -> str:
    """Where the base stands: its steps (epochs) and held-out DSM loss, with the change over the
    doubling before it and (when the curve goes on) after it; "—" from scratch."""
    curve = {c["steps"]: c["heldout_dsm"] for c in m["base_curve"]}
    steps = m["base_steps"]
    if steps not in curve:
        return "—"
    text = f"{steps} steps ({_epochs(m['base_epochs'])} ep.), held-out DSM {curve[steps]:.3f}"
    for other, when in ((steps // 2, "before"), (steps * 2, "after")):
        if other in curve:
            change = curve[max(steps, other)] / curve[min(steps, other)] - 1
            text += f", {100 * change:+.1f}% the doubling {when}".replace("-", "−")
    return text


def _data_name(m: dict) -> str:
    """The data set, with its folder where that names a subset (mnist-10k)."""
    folder = Path(m["config"].get("data_dir") or m["dataset"]).name
    return m["dataset"] if folder == m["dataset"] else f"{m['dataset']} ({folder})"


def _paired_dsm(m: dict, e: dict) -> dict:
    """The DSM side of an FP row: its base's DSM runs, or, where FP's seeds start from several
    bases (from scratch: one init per seed), the mean over those bases, so both sides average
    the same seeds."""
    if "dsm_by_base" not in m:
        return m["dsm"]
    bases = [m["dsm_by_base"][b] for b in dict.fromkeys(e["base_ids"])]
    if len(bases) == 1:
        return bases[0]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {
        "bpd": {"mean": mean([b["bpd"]["mean"] for b in bases])},
        "heldout_dsm": mean([b["heldout_dsm"] for b in bases]),
        "r_fp": [mean(col) for col in zip(*(b["r_fp"] for b in bases))],
    }


def verdict(arg: str) -> str:
    """The image verdict: one row per (data set, SDE, protocol, budget, β) of the given
    ``image/finetune.py`` folders, the paper's numbers beside ours, from each metrics.json."""
    from scorepde.reporting import markdown_table

    rows = []
    for folder in arg.split():
        m = json.loads((ROOT / folder / "metrics.json").read_text())
        data = "fashion-mnist" if m["dataset"] == "fashion-mnist" else "mnist"
        paper = dict(zip(PAPER_BETAS, PAPER_BPD[m["protocol"], data, m["sde"]]))
        mid = min(range(len(m["residual_t"])), key=lambda i: abs(m["residual_t"][i] - 0.5))
        for beta, e in sorted(m["betas"].items(), key=lambda kv: float(kv[0])):
            if "paired" not in e:
                continue
            d = e["paired"]
            dsm = _paired_dsm(m, e)
            ci = f"{d['mean']:+.4f} " + (
                "(one pair: no interval)" if d["lo"] is None else f"[{d['lo']:+.4f}, {d['hi']:+.4f}]"
            )
            ci = ci.replace("-", "−")
            pv, pf = paper[0.0], paper.get(float(beta))
            rows.append(
                [
                    _data_name(m),
                    m["sde"].upper(),
                    "Table 1, from scratch" if m["protocol"] == "scratch" else "Table 5, fine-tuned",
                    _budget(m),
                    _base_state(m),
                    beta,
                    str(len(d["diffs"])),
                    "—" if pf is None else f"{pv:.2f} → {pf:.2f} ({pf - pv:+.2f})".replace("-", "−"),
                    f"{dsm['bpd']['mean']:.4f} → {e['bpd']['mean']:.4f}",
                    f"**{ci}**" if d["excludes_zero"] else ci,
                    f"{e['eval_se_diff']:.4f}",
                    f"{dsm['heldout_dsm']:.4f} / {e['heldout_dsm']:.4f}",
                    f"{dsm['r_fp'][mid]:.1f} / {e['r_fp'][mid]:.1f}",
                    f"`{folder}`",
                ]
            )
    headers = [
        "data set",
        "SDE",
        "protocol",
        "budget (epochs)",
        "base",
        "β",
        "pairs",
        "paper: vanilla → FP (bits/dim)",
        "ours: DSM → FP (bits/dim)",
        "ours: FP − DSM, paired [95% CI]",
        "eval SE of the difference",
        "held-out DSM, DSM / FP",
        f"r_FP(t = {m['residual_t'][mid]:g}), DSM / FP",
        "results",
    ]
    return f"{markdown_table(headers, rows)}\n\n*Generated from each folder's `metrics.json`.*\n"


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


#: The solver choices ``norms`` compares, as (lever of benchmarks/likelihood_cost.py, header).
NORMS = (
    ("scipy_rk45", "SciPy RK45"),
    ("torchdiffeq_fp32", "torchdiffeq, float32"),
    ("rk_per_sample", "t, state"),
    ("rk_balanced", "t, balanced"),
    ("rk_error_on_logp", "t, log p"),
    ("rk_sigma", "σ, state"),
    ("rk_sigma_balanced", "σ, balanced"),
    ("rk_sigma_logp", "σ, log p"),
)


def norms(arg: str) -> str:
    """Rows evaluated at tol 1e-5 by each clock and error norm (per-sample dopri5 in float64),
    one row per lever study ``FOLDER:CASE:SDE`` of ARG, ✓ where inside issue 34's target on
    both measures; the cheapest such choice in bold and bits/dim's default named."""
    from scorepde.bpd import bpd_solver_defaults
    from scorepde.commands.likelihood_cost import within
    from scorepde.reporting import markdown_table
    from scorepde.sde import VESDE, VPSDE

    default_lever = {
        ("t", "state"): "rk_per_sample",
        ("t", "balanced"): "rk_balanced",
        ("sigma", "state"): "rk_sigma",
        ("sigma", "balanced"): "rk_sigma_balanced",
    }
    out = []
    for item in arg.split():
        folder, case, sde = item.split(":")
        m = json.loads((ROOT / folder / "metrics.json").read_text())
        c = m["cases"][case]
        at = {r["lever"]: r for r in c["rows"] if r["tol"] == 1e-5}
        kw = bpd_solver_defaults(VPSDE() if sde == "vp" else VESDE())
        default = default_lever[kw["time"], kw.get("error_on", "balanced")]
        # a study that ran the defaults by name: log_likelihood's is the t clock, balanced
        for lever, same in (("rk_balanced", "default"), (default, "bpd_default")):
            if lever not in at and same in at:
                at[lever] = at[same]
        ok = {k: within(r, c["verdict"]["target"]) == "both" for k, r in at.items()}
        cheapest = min((at[k]["sample_evals"] for k in at if ok[k]), default=None)
        cells = []
        for lever, _ in NORMS:
            if lever not in at:
                cells.append("—")
                continue
            n = at[lever]["sample_evals"]
            cell = f"{n} {'✓' if ok[lever] else '✗'}"
            cells.append(f"**{cell}**" if n == cheapest else cell)
        draws = f" × {c['draws']} draws" if c.get("draws", 1) > 1 else ""
        name = f"{Path(folder).name} ({c['points']} images{draws}, D = {c['dim']})"
        out.append([name, sde.upper(), *cells, dict(NORMS)[default]])
    headers = ["study", "SDE", *(h for _, h in NORMS), "bits/dim's default"]
    return f"{markdown_table(headers, out)}\n\n*Generated from each study's `metrics.json`.*\n"


KINDS = {
    "include": include,
    "verdict": verdict,
    "estimators": estimators,
    "finetune": finetune,
    "api": api,
    "presets": presets,
    "properties": properties,
    "tests": tests,
    "norms": norms,
}


#: Figures the pages show, copied from the results they belong to (MkDocs serves only docs/).
FIGURES = {
    "figures/density_checkerboard.png": "toy/results/density_paper/density_checkerboard.png",
    "figures/nll_vs_beta.png": "toy/results/density_paper/nll_vs_beta.png",
    "figures/cauchy_rel_l2_over_t.png": "toy/results/cauchy/rel_l2_over_t.png",
    "figures/likelihood_work_precision.png": "benchmarks/results/likelihood_cost/digits64/work_precision.png",
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
    for page in [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]:  # the README's goal rows too
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
