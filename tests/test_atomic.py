"""scorepde.atomic: a failed write leaves the old file and no temporary behind."""

import json
import os
from pathlib import Path

import pytest

from scorepde.atomic import atomic_write


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "result.json")
    atomic_write(path, lambda f: json.dump({"v": 1}, f), binary=False)

    def half(f):
        f.write('{"v": ')
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half, binary=False)
    assert json.loads(Path(path).read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["result.json"]


def test_it_makes_the_folder_and_returns_the_path(tmp_path):
    path = str(tmp_path / "a" / "b.pt")
    assert atomic_write(path, lambda f: f.write(b"x")) == path
    assert Path(path).read_bytes() == b"x"
