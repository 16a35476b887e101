"""Layers that point one way (STYLE.md): every import inside scorepde, top-level or inside a
function, goes to the same layer or a lower one, and no chain of imports comes back to
where it started. Read from the source (ast), so nothing is imported to check it.

A new module needs a line in LAYERS: the test fails on one that has none.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scorepde"

#: Layer of each module (by its first name under scorepde: ``estimators.autograd`` → ``estimators``).
#: 0 the ground floor: protocols, checks and small helpers that know nothing of scores;
#: 1 derivative operators, and the SDEs beside them (GenericSDE takes div f from them);
#: 2 the score FPE and its estimators, and what a score is made of (nets, mixtures);
#: 3 what is computed from the FPE: objectives, likelihood, sampling, diagnostics;
#: 4 training, evaluation, audit, data, reporting and figures; 5 the commands (and examples).
LAYERS = {
    0: [
        "typing",
        "errors",
        "checks",
        "autodiff",
        "atomic",
        "stats",
        "outputs",
        "runstore",
        "distributed",
        "benchmarking",
        "rk",
        "flags",
    ],
    1: ["derivatives", "sde", "time_change"],
    2: ["fpe", "estimators", "nn", "gmm"],
    3: ["losses", "likelihood", "sampling", "curves", "curl", "metrics", "cauchy", "schedules", "baselines"],
    4: [
        "training",
        "checkpoints",
        "resumable",
        "bpd",
        "data",
        "audit",
        "reporting",
        "plotting",
        "toy",
        "image_config",
        "image_eval",
        "imaging",
    ],
    5: ["commands", "cli", "examples"],
}
LAYER = {name: level for level, names in LAYERS.items() for name in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set:
    """The scorepde modules ``path`` imports (relative or absolute, anywhere in the file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "scorepde"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "scorepde":
                continue
            # ``from . import plotting`` imports the module scorepde.plotting
            subs = {f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")}
            found |= subs or {target}
    found.discard("scorepde")  # the package facade itself runs first anyway
    return {m for m in found if m != name}


def _graph(root: Path = PACKAGE) -> dict:
    return {_module_name(p): _imports(p) for p in sorted(root.rglob("*.py")) if _module_name(p) != "scorepde"}


def _layer(module: str) -> int:
    key = module.split(".")[1]
    if key not in LAYER:
        pytest.fail(
            f"{module} has no layer: add {key!r} to LAYERS in tests/test_layers.py, "
            "at the lowest layer whose modules it imports from"
        )
    return LAYER[key]


def _cycle(graph: dict):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n) :] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def _upward(graph: dict) -> list:
    return [
        f"{m} (layer {_layer(m)}) imports {n} (layer {_layer(n)})"
        for m, targets in sorted(graph.items())
        for n in sorted(targets)
        if _layer(n) > _layer(m)
    ]


def test_no_import_cycle():
    assert _cycle(_graph()) is None, f"import cycle: {' -> '.join(_cycle(_graph()))}"


def test_no_module_imports_one_above_it():
    assert _upward(_graph()) == []


def test_every_module_has_a_layer():
    for module in _graph():
        _layer(module)


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path):
    """The reader of imports and both checks, on a small package written here."""
    pkg = tmp_path / "scorepde"
    (pkg / "commands").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sde import SDE\n")
    (pkg / "commands" / "__init__.py").write_text("")
    (pkg / "commands" / "eval.py").write_text("from .. import reporting\nfrom ..stats import mean_se\n")
    (pkg / "reporting.py").write_text("def f():\n    from . import plotting\n")  # lazy import counts
    (pkg / "plotting.py").write_text("import scorepde.reporting\n")  # cycle with reporting
    (pkg / "sde.py").write_text("from .fpe import residual\n")  # layer 1 -> 2
    (pkg / "fpe.py").write_text("")
    (pkg / "stats.py").write_text("")
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        graph = _graph(pkg)
        assert graph["scorepde.commands.eval"] == {"scorepde.reporting", "scorepde.stats"}
        assert graph["scorepde.reporting"] == {"scorepde.plotting"}
        assert set(_cycle(graph)) == {"scorepde.reporting", "scorepde.plotting"}
        assert _upward(graph) == ["scorepde.sde (layer 1) imports scorepde.fpe (layer 2)"]
    finally:
        PACKAGE = saved
