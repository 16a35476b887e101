"""The README's Python examples run as written, and its commands are the ones CI uses."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_example_runs(index):
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})


def test_ci_uses_the_readme_commands():
    ci = (README.parent / ".ci" / "run").read_text()
    text = README.read_text()
    assert "<!-- ci:install -->" in text and "<!-- ci:test -->" in text and "ci:install" in ci
    assert len(BLOCKS) >= 1  # the thirty-second example


# ---------------------------------------------------------------------------------------
# The README's shell commands: every one names a script that exists and flags it accepts;
# the short ones run as written, from a fresh folder.
# ---------------------------------------------------------------------------------------
import argparse  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

ROOT = README.parent
#: Commands of the README that the test suite runs as written (each well under a minute).
SHORT = ["python image/train.py --steps 100 --out runs/try"]


def readme_commands(path=README):
    """Each shell command of a page's bash blocks, continuation lines joined, comments dropped,
    and shell variables set in the same block (``E="--dataset mnist ..."``) expanded."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        variables = {}
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if len(words) == 1 and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                name, value = words[0].split("=", 1)
                variables[name] = value
                continue
            for name, value in variables.items():
                line = re.sub(rf"\${name}\b", lambda _: value, line)
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def _script_and_argv(words):
    if words[0] == "torchrun":
        words = words[next(i for i, w in enumerate(words) if w.endswith(".py")) - 1 :]
        words = ["python", *words[1:]] if not words[0].endswith(".py") else ["python", *words]
    if words[0] != "python" or len(words) < 2 or not words[1].endswith(".py"):
        return None, None
    return ROOT / words[1], words[2:]


class _Parsed(Exception):
    pass


def _parse_with_script(path, argv):
    """Parse ``argv`` with the parser the script builds (found when it parses), never running it."""
    parsers = []
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        parsers.append(self)
        raise _Parsed

    saved = sys.modules.pop("_common", None)  # toy/ and benchmarks/ each have a _common
    argparse.ArgumentParser.parse_args = capture
    try:
        spec = importlib.util.spec_from_file_location(f"readme_{path.parent.name}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            (getattr(module, "parse_args", None) or module.main)([])
        except _Parsed:
            pass
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.modules.pop("_common", None)
        if saved is not None:
            sys.modules["_common"] = saved
        while str(path.parent) in sys.path:
            sys.path.remove(str(path.parent))
    return parsers[0].parse_args(argv)


DOC_PAGES = sorted((ROOT / "docs").glob("*.md")) + [
    ROOT / d / "RESULTS.md" for d in ("toy", "image", "benchmarks")
]


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_docs_command_names_a_script_and_flags_it_takes(page):
    """The commands moved from the README into the docs stay runnable as written."""
    for words in readme_commands(page):
        _check_command(words)


def _check_command(words):
    """True when ``words`` run a script of this repository, parsed by that script's own parser."""
    path, argv = _script_and_argv(words)
    if path is None:
        assert words[0] in (
            "python",
            "python3",
            "pip",
            "torchrun",
            "bash",
            "mkdocs",
            "ruff",
            "mypy",
        ) or "venv" in " ".join(words), words
        return False
    assert path.is_file(), f"{path} is named but does not exist"
    args = _parse_with_script(path, argv)  # argparse exits with status 2 on a flag it does not take
    for passed_on in ("extra", "fp_flags"):  # bench_bpd.py hands these to image/train.py
        if getattr(args, passed_on, None):
            _parse_with_script(ROOT / "image" / "train.py", shlex.split(getattr(args, passed_on)))
    return True


def test_every_readme_command_names_a_script_and_flags_it_takes():
    checked = sum(_check_command(words) for words in readme_commands())
    assert checked >= 2
    assert all(shlex.split(c) in readme_commands() for c in SHORT), "SHORT must quote the README"


@pytest.mark.slow
@pytest.mark.parametrize("command", SHORT)
def test_short_readme_commands_run_as_written(command, tmp_path):
    for folder in ("image", "toy", "benchmarks"):
        os.symlink(ROOT / folder, tmp_path / folder)
    proc = subprocess.run(
        shlex.split(command.replace("python", sys.executable, 1)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results in" in proc.stdout and (tmp_path / "runs" / "try" / "checkpoint.pt").is_file()


def test_every_number_in_the_readme_is_on_a_docs_page():
    """The README's numbers are quoted from docs pages that hold them beside their commands
    (generated there from the committed results), so they cannot drift on their own."""
    prose = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    docs = "\n".join(page.read_text() for page in sorted((ROOT / "docs").glob("*.md")))
    numbers = set(re.findall(r"(?<![\w.])[+−-]?\d+\.\d+(?![\w.])", prose))
    missing = sorted(n for n in numbers if n not in docs)
    assert not missing, f"README numbers that no docs page holds: {missing}"
