"""The package metadata tells the truth: every import declared with a lower bound that the
installed versions meet, one version, a license file, py.typed, a changelog entry."""

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

import scorepde as sp

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: import name -> distribution name, where they differ
DIST = {"sklearn": "scikit-learn"}
#: optional: imported lazily, only by the function that needs it, and declared as an extra
OPTIONAL = {"diffusers", "torchode"}


def _requirements(reqs):
    out = {}
    for req in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(>=|==)\s*([0-9][0-9.]*)", req)
        assert m, f"{req!r}: declare a lower bound (name>=X.Y) or a pin"
        out[m.group(1).lower()] = (m.group(3), m.group(4))
    return out


def _version(text):
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _third_party_imports():
    names = set()
    for path in (ROOT / "scorepde").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "scorepde"}


def test_every_imported_package_is_declared_with_a_lower_bound():
    required = _requirements(PROJECT["dependencies"])
    extras = {
        k: v for reqs in PROJECT["optional-dependencies"].values() for k, v in _requirements(reqs).items()
    }
    for name in _third_party_imports():
        dist = DIST.get(name, name)
        declared = extras if name in OPTIONAL else required
        assert dist in declared, f"scorepde imports {name}; declare {dist}>=X in pyproject.toml"
        assert declared[dist][0] == ">=", f"{dist}: a dependency takes a lower bound, not a pin"


@pytest.mark.parametrize("req", PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"])
def test_installed_versions_meet_the_declared_lower_bounds(req):
    ((dist, (_, low)),) = _requirements([req]).items()
    assert _version(metadata.version(dist)) >= _version(low), f"{dist} {metadata.version(dist)} < {low}"


def test_the_version_is_written_once():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert metadata.version("scorepde") == sp.__version__, "reinstall: pip install -e ."
    cff = re.search(r"^version:\s*(\S+)", (ROOT / "CITATION.cff").read_text(), flags=re.M).group(1)
    assert cff == sp.__version__, "CITATION.cff's version follows scorepde.__version__"
    assert re.search(rf"^## {re.escape(sp.__version__)}\b", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)


def test_license_file_matches_the_declared_license():
    assert PROJECT["license"] == "MIT" and "LICENSE" in PROJECT["license-files"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_package_is_marked_typed():
    assert (ROOT / "scorepde" / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["scorepde"]


def test_no_tracked_file_names_an_absolute_path_of_this_machine():
    """Commands and run files use paths relative to the repository (../shared/data/mnist-10k)."""
    import subprocess

    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    roots = "|".join(["work", "tmp", "home", "root", "Users", "mnt", "scratch"])
    pattern = re.compile(rf"(?<![\w.~-])/({roots})/\w")
    found = []
    for name in listed.stdout.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file() or path.suffix in (".png", ".pt", ".npz", ".gz", ".pdf"):
            continue
        text = path.read_bytes()[:2_000_000].decode("utf-8", errors="ignore")
        found += [f"{name}:{text.count(chr(10), 0, m.start()) + 1}" for m in pattern.finditer(text)]
    assert not found, f"absolute paths (make them relative to the repository): {found[:20]}"
