"""Output folders: a folder that holds results is refused unless --resume or --overwrite."""

import os

import pytest

from scorepde.outputs import announce, holds_results, prepare_out


def test_a_new_folder_is_created_and_returned(tmp_path):
    out = prepare_out(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and out.is_dir()


def test_an_empty_folder_is_accepted(tmp_path):
    (tmp_path / "run" / "sub").mkdir(parents=True)
    assert prepare_out(tmp_path / "run").is_dir()


@pytest.mark.parametrize("name", ["metrics.json", "figure.png", "sub/log.jsonl"])
def test_a_folder_with_results_is_refused_naming_it_and_the_flags(tmp_path, name):
    run = tmp_path / "run"
    (run / name).parent.mkdir(parents=True, exist_ok=True)
    (run / name).write_text("{}")
    with pytest.raises(ValueError) as err:
        prepare_out(run)
    message = str(err.value)
    assert str(run) in message and "--resume" in message and "--overwrite" in message
    assert os.path.basename(name) in message
    assert (run / name).read_text() == "{}"  # the refusal touched nothing


@pytest.mark.parametrize("flag", ["resume", "overwrite"])
def test_resume_or_overwrite_accept_a_folder_with_results_and_keep_its_files(tmp_path, flag):
    (tmp_path / "metrics.json").write_text("{}")
    assert prepare_out(tmp_path, **{flag: True}) == tmp_path
    assert (tmp_path / "metrics.json").exists()


def test_resume_and_overwrite_together_or_a_file_are_refused(tmp_path):
    with pytest.raises(ValueError, match="exclude each other"):
        prepare_out(tmp_path, resume=True, overwrite=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        prepare_out(tmp_path / "f", overwrite=True)


def test_a_relative_path_is_relative_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = prepare_out("runs/x")
    assert (tmp_path / "runs" / "x").is_dir() and out.resolve() == (tmp_path / "runs" / "x").resolve()


def test_holds_results_lists_files_only(tmp_path):
    (tmp_path / "empty").mkdir()
    assert holds_results(tmp_path) == [] and holds_results(tmp_path / "missing") == []
    (tmp_path / "empty" / "a.png").write_bytes(b"")
    assert holds_results(tmp_path) == [os.path.join("empty", "a.png")]


def test_announce_prints_the_absolute_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    announce("out", ["metrics.json"])
    line = capsys.readouterr().out
    assert str(tmp_path / "out") in line and "metrics.json" in line


def test_a_command_without_resume_offers_overwrite_alone(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ValueError) as err:
        prepare_out(tmp_path, can_resume=False)
    assert "--overwrite" in str(err.value) and "--resume" not in str(err.value)
