"""Mutation testing of the core modules with mutmut 3 (too slow for CI: about an hour on one core).

    pip install -e ".[test,mutation]"
    nice python tools/mutation.py run          # mutmut run --max-children 1, decorated functions included
    python tools/mutation.py report            # tools/results/mutation/{results.json,table.md} from mutants/

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
each survivor with its reason from tools/mutation_survivors.toml; a survivor without one is
listed as "unexplained".
"""

from __future__ import annotations

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


def run(args: list[str]) -> None:
    """``mutmut run --max-children 1 ARGS`` with the patch; run from the repository root."""
    patch_mutmut()
    from mutmut.__main__ import cli

    cli(["run", "--max-children", "1", *args])


def _results() -> dict[str, dict[str, str]]:
    """{module path: {mutant name: status}} from mutmut's records under mutants/."""
    from mutmut.stats import status_by_exit_code

    out: dict[str, dict[str, str]] = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(ROOT / "mutants"))[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            out[module] = {name: status_by_exit_code[code] for name, code in sorted(codes.items())}
    return out


def _reasons() -> dict[str, str]:
    import tomllib

    return tomllib.loads(REASONS.read_text()).get("survivors", {}) if REASONS.exists() else {}


def report() -> None:
    """Write results.json (every mutant's status) and table.md (per module, then each survivor)."""
    from scorepde.reporting import markdown_table

    results, reasons = _results(), _reasons()
    if not results:
        sys.exit("no mutmut results under mutants/: run `python tools/mutation.py run` first")
    statuses = ["killed", "survived", "timeout", "no tests"]
    rows, totals = [], dict.fromkeys(statuses, 0)
    for module, mutants in results.items():
        counts = {s: sum(v == s for v in mutants.values()) for s in statuses}
        other = len(mutants) - sum(counts.values())
        for s in statuses:
            totals[s] += counts[s]
        rows.append([f"`{module}`", len(mutants), *counts.values(), other, _score(counts, len(mutants))])
    n = sum(len(m) for m in results.values())
    rows.append(["**all**", n, *totals.values(), n - sum(totals.values()), _score(totals, n)])
    table = markdown_table(["module", "mutants", *statuses, "other", "killed %"], rows)
    survivors = [
        (name, reasons.get(name, "**unexplained**"))
        for mutants in results.values()
        for name, s in mutants.items()
        if s != "killed"
    ]
    lines = [
        table,
        "",
        "Score: killed (a timeout counts as killed: the mutant made the tests hang) over all mutants.",
        "",
    ]
    if survivors:
        lines += ["Every mutant not killed, and why:", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in survivors]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print((OUT / "table.md").read_text())


def _score(counts: dict[str, int], n: int) -> str:
    return f"{100 * (counts['killed'] + counts['timeout']) / max(n, 1):.1f}"


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "report"):
        sys.exit("usage: python tools/mutation.py run [MUTANT ...] | report")
    run(sys.argv[2:]) if sys.argv[1] == "run" else report()
