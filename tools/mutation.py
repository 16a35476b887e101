"""Mutation testing of the core modules with mutmut 3 (too slow for CI: hours on one shared core).

    pip install -e ".[test,mutation]"
    nice python tools/mutation.py run          # mutmut run --max-children 1, decorated functions included
    python tools/mutation.py report            # tools/results/mutation/{results.json,table.md} from mutants/
    python tools/mutation.py run --max-tests 30 $(python tools/mutation.py undecided)   # again, after new tests

What is mutated and which tests run is ``[tool.mutmut]`` in pyproject.toml. ``run`` passes any
further arguments to ``mutmut run`` (mutant names, to rerun those only).

Why a wrapper and not plain ``mutmut run``: mutmut 3 leaves every decorated function
unmutated (``MutationVisitor._skip_node_and_children``: a decorator may have side effects when
a second copy of the function is defined, ``@property`` breaks its trampoline), and most of
the public operators here carry ``@renamed_keywords`` or ``@explain_autodiff_errors``, the
SDEs ``@property``. Those three decorators only wrap (no registration, no cache), so for a
function whose decorators are all among them the wrapper mutates it anyway, keeps the
decorators on the trampoline that dispatches to the active mutant, and strips them from the
copies the trampoline calls (so a property's copy is a plain method, and no keyword remap runs
twice). Any other decorator still makes mutmut skip the function; ``report`` counts none of
those in the core modules today. mutmut 3 mutates inside functions and methods only: module
constants (``WEIGHTINGS``, ``ESTIMATORS``' presets, ``PAPER_STEPS``) are not mutated; the tests in
tests/test_values.py pin them by value instead.

``report`` reads mutmut's own records (``mutants/**/*.py.meta``), never typed numbers, and joins
each survivor (with the line it changed) with its reason from tools/mutation_survivors.toml
(by the mutant's name, or by a rule matching its change); a survivor without one is listed
as "unexplained".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tools" / "results" / "mutation"
REASONS = ROOT / "tools" / "mutation_survivors.toml"

#: Decorators that only wrap the function they decorate: safe to keep on mutmut's trampoline.
WRAPPING_DECORATORS = frozenset({"renamed_keywords", "explain_autodiff_errors", "property"})


def _decorator_name(decorator) -> str:
    """The last name of a decorator expression: ``@renamed_keywords(model="score")`` -> renamed_keywords."""
    import libcst as cst

    while isinstance(decorator, cst.Call):
        decorator = decorator.func
    if isinstance(decorator, cst.Attribute):
        return decorator.attr.value
    return getattr(decorator, "value", "")


def _only_wrapping(function) -> bool:
    names = [_decorator_name(d.decorator) for d in function.decorators]
    return bool(names) and all(name in WRAPPING_DECORATORS for name in names)


def patch_mutmut() -> None:
    """Let mutmut 3 mutate functions whose decorators are all in ``WRAPPING_DECORATORS``."""
    import libcst as cst
    from libcst.metadata import PositionProvider
    from mutmut.mutation import file_mutation as fm

    skip = fm.MutationVisitor._skip_node_and_children
    arrange = fm.function_trampoline_arrangement

    def skip_node_and_children(self, node):
        if isinstance(node, cst.FunctionDef) and _only_wrapping(node):
            position = self.get_metadata(PositionProvider, node, None)
            if position and position.start.line in self._ignored_node_lines:  # pragma: no mutate block
                self.ignored_functions.add(node.name.value)
                return True
            return node.name.value in fm.NEVER_MUTATE_FUNCTION_NAMES
        return skip(self, node)

    def function_trampoline_arrangement(function, mutants, class_name):
        declarations, nodes, assignments, names = arrange(function, mutants, class_name)
        if _only_wrapping(function):  # nodes = [trampoline, original copy, mutant copies...]
            nodes = nodes[:1] + [n.with_changes(decorators=[]) for n in nodes[1:]]
        return declarations, nodes, assignments, names

    fm.MutationVisitor._skip_node_and_children = skip_node_and_children
    fm.function_trampoline_arrangement = function_trampoline_arrangement


#: The test files of each mutated module, run first when a mutant's tests are capped.
OWN_TESTS = {
    "fpe": ["test_fpe", "test_estimators", "test_residual_operator"],
    "estimators": ["test_fpe", "test_estimators", "test_residual_operator"],
    "derivatives": ["test_derivatives"],
    "sde": ["test_sde"],
    "losses": ["test_losses", "test_fp_every"],
    "likelihood": ["test_likelihood"],
    "bpd": ["test_bpd"],
    "gmm": ["test_gmm", "test_cauchy_highdim"],
    "cauchy": ["test_toy", "test_cauchy_highdim"],
    "curl": ["test_curl"],
    "rk": ["test_rk", "test_likelihood"],
    "time_change": ["test_time_change", "test_likelihood"],
}


def cap_tests(max_tests: int) -> None:
    """Run each mutant against at most ``max_tests`` of its covering tests: those of
    tests/test_values*.py first, then those of its own module's test files, then the others, the
    fastest first within each (mutmut runs them in that order and stops at the first failure: a
    value test that fails at once goes before a slower test the mutant would hang). A kill stays a
    kill; a survivor may be one that a test left out would have killed, so the score is then a
    lower bound."""
    import mutmut.__main__ as mm

    make = mm.get_mutant_runner

    def get_mutant_runner(max_workers: int = 1):
        runner = make(max_workers)
        submit = runner.submit

        def capped(name, tests, cpu_time_limit, estimated_time):
            # read now: the runner is made before mutmut loads its stats, which replace the dict
            durations = mm.state().duration_by_test
            module = name.split(".")[1]
            own = {f"tests/{f}.py" for f in OWN_TESTS.get(module, [])}
            place = lambda path: 0 if path.startswith("tests/test_values") else 1 if path in own else 2
            rank = lambda test: (place(test.split("::")[0]), durations.get(test, 0.0))
            tests = sorted(tests, key=rank)[:max_tests]
            return submit(name, tests, cpu_time_limit, sum(durations.get(test, 0.0) for test in tests))

        runner.submit = capped
        return runner

    mm.get_mutant_runner = get_mutant_runner


def run(args: list[str], max_tests: int | None = None) -> None:
    """``mutmut run --max-children 1 ARGS`` with the patch; run from the repository root."""
    patch_mutmut()
    if max_tests:
        cap_tests(max_tests)
    from mutmut.__main__ import cli

    cli(["run", "--max-children", "1", *args])


def undecided() -> list[str]:
    """The mutants run and not killed that have no reason yet (tools/mutation_survivors.toml),
    and every timeout: the ones worth running again after new tests."""
    import tomllib

    reasons = tomllib.loads(REASONS.read_text()) if REASONS.exists() else {}
    return [
        name
        for module, mutants in _results().items()
        for name, st in mutants.items()
        if st == "timeout"
        or st in ("survived", "no tests")
        and _reason(name, _change(name, module), reasons) == UNEXPLAINED
    ]


def _results() -> dict[str, dict[str, str]]:
    """{module path: {mutant name: status}} from mutmut's records under mutants/."""
    from mutmut.stats import status_by_exit_code

    out: dict[str, dict[str, str]] = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        module = meta.relative_to(ROOT / "mutants").as_posix()[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            out[module] = {name: status_by_exit_code[code] for name, code in sorted(codes.items())}
    return out


#: The reason of a mutant that ``tools/mutation_survivors.toml`` does not explain yet.
UNEXPLAINED = "**unexplained**: not analysed yet (a missing test, or an equivalent mutant to argue)."


def _reason(name: str, change: str, reasons: dict) -> str:
    """Why ``name`` lived: its own entry in ``[survivors]``, else the first ``[[changes]]`` rule whose
    regular expression ``pattern`` matches its change (``old`` → ``new``)."""
    import re

    if name in reasons.get("survivors", {}):
        return reasons["survivors"][name]
    rule = next((r for r in reasons.get("changes", []) if re.search(r["pattern"], change)), None)
    return rule["reason"] if rule else UNEXPLAINED


def _change(name: str, module: str) -> str:
    """The mutated line(s) of ``name``, ``old`` → ``new``, from mutmut's own diff."""
    import os

    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        diff = get_diff_for_mutant(name, path=module).splitlines()
    finally:
        os.chdir(cwd)
    old = " ".join(line[1:].strip() for line in diff if line.startswith("-") and not line.startswith("---"))
    new = " ".join(line[1:].strip() for line in diff if line.startswith("+") and not line.startswith("+++"))
    return f"`{old}` → `{new}`"


def report(commit: str | None = None) -> None:
    """Write results.json (per module: the counts, and each mutant run and not killed) and table.md."""
    import tomllib

    from scorepde.reporting import markdown_table

    results = _results()
    reasons = tomllib.loads(REASONS.read_text()) if REASONS.exists() else {}
    if not results:
        sys.exit("no mutmut results under mutants/: run `python tools/mutation.py run` first")
    statuses = ["killed", "timeout", "survived", "no tests", "not checked"]
    counts_of = {
        module: {s: sum(v == s for v in mutants.values()) for s in statuses}
        for module, mutants in results.items()
    }
    rows, totals = [], dict.fromkeys(statuses, 0)
    for module, mutants in results.items():
        counts = counts_of[module]
        for s in statuses:
            totals[s] += counts[s]
        rows.append(
            [f"`{module}`", len(mutants), *counts.values(), _score(counts, len(mutants)), _checked(counts)]
        )
    n = sum(len(m) for m in results.values())
    rows.append(["**all**", n, *totals.values(), _score(totals, n), _checked(totals)])
    lines = [markdown_table(["module", "mutants", *statuses, "killed %", "killed % of checked"], rows), ""]
    if commit:
        lines = [f"Mutants of the code at commit `{commit}`.", "", *lines]
    left = [
        (name, module, st)
        for module, mutants in results.items()
        for name, st in mutants.items()
        if st not in ("killed", "not checked")
    ]
    if left:
        lines += ["Every mutant run and not killed (the change, then why it lived):", ""]
        for name, module, st in left:
            change = _change(name, module)
            why = _reason(name, change, reasons)
            if st == "timeout":
                why = "Timed out, not counted as a kill: " + (
                    "cause not analysed (a hang, or a correct but slow run on the loaded machine)."
                    if why == UNEXPLAINED
                    else why
                )
            lines.append(f"- `{name}` ({st}): {change}. {why}")
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {
        module: {
            "counts": counts_of[module],
            "not_killed": {name: st for name, st in mutants.items() if st not in ("killed", "not checked")},
        }
        for module, mutants in results.items()
    }
    (OUT / "results.json").write_text(json.dumps({"commit": commit, "modules": summary}, indent=1) + "\n")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print(f"{OUT / 'table.md'}: {totals['killed']} of {n} killed ({_score(totals, n)}%)")


def _checked(counts: dict[str, int]) -> str:
    """The score over the mutants that were run: killed / (all − not checked)."""
    checked = sum(counts.values()) - counts["not checked"]
    return _score(counts, checked) if checked else "—"


def _score(counts: dict[str, int], n: int) -> str:
    """Killed / n in percent. A timeout is not counted as a kill (mutmut's badge counts it): on a
    loaded machine a correct but slow run can time out, so only a failing test is proof."""
    return f"{100 * counts['killed'] / max(n, 1):.1f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="mutmut run --max-children 1, decorated functions included")
    run_p.add_argument(
        "mutants", nargs="*", help="mutant names (or globs) to rerun; default: every one not yet run"
    )
    run_p.add_argument(
        "--max-tests",
        type=int,
        help="run each mutant against its N fastest covering tests only (a quick first pass)",
    )
    sub.add_parser("undecided", help="print the mutants run and not killed that have no reason yet")
    rep = sub.add_parser("report", help="write tools/results/mutation/{results.json,table.md} from mutants/")
    rep.add_argument("--commit", help="the commit whose code was mutated, named in the table")
    args = p.parse_args(argv)
    if args.command == "run":
        run(args.mutants, args.max_tests)
    elif args.command == "undecided":
        print("\n".join(undecided()))
    else:
        report(args.commit)


if __name__ == "__main__":
    main()
