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
    assert len(BLOCKS) >= 2
