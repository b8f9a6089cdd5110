"""The researcher's own modules through the real commands, from a folder outside the repo:
``import`` in a gin file (its folder importable from any cwd), ``--import``, the record in
``operative_config.gin`` that repeats a run from its workdir alone, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from user_project import error_line, run, write_project

from dirgrad_opt import user_modules


def test_gin_import_from_any_cwd_and_repeat_from_workdir(tmp_path: Path):
    gin_file = write_project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    workdir = tmp_path / "runs" / "a"
    proc = run("experiments.train", f"--gin_file={gin_file}", f"--workdir={workdir}", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((workdir / "result.json").read_text())
    assert result["status"] == "complete"
    assert result["optimizer"]["class"] == "ScaledStep"
    assert result["optimizer"]["config"]["factor"] == 0.25  # no get_config in the user's class
    assert result["dataset"]["name"] == "my_points"  # registered by the user's module
    operative = (workdir / "operative_config.gin").read_text()
    assert f"{user_modules.PATH_MARKER} {tmp_path / 'project'}\n" in operative
    assert "\nimport my_opt\n" in operative
    assert "ScaledStep.factor = 0.25" in operative

    # The workdir alone repeats the run, from yet another folder: same final metrics.
    again = tmp_path / "runs" / "b"
    proc = run(
        "experiments.train",
        f"--gin_file={workdir / 'operative_config.gin'}",
        f"--workdir={again}",
        cwd=tmp_path / "runs",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    repeated = json.loads((again / "result.json").read_text())
    assert repeated["final"] == result["final"]
    assert repeated["optimizer"]["class"] == "ScaledStep"


def test_import_flag(tmp_path: Path):
    write_project(tmp_path, gin_import=False)
    proc = run(
        "experiments.train",
        "--import=my_opt",
        "--gin_file=exp.gin",
        f"--workdir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    operative = (tmp_path / "run" / "operative_config.gin").read_text()
    assert f"{user_modules.PATH_MARKER} {tmp_path}\n" in operative
    assert "\nimport my_opt\n" in operative
    assert "ScaledStep.factor = 0.25" in operative


def test_without_the_import_the_optimizer_is_unknown(tmp_path: Path):
    """The guarantee above is the import: without it, the same file is a config error."""
    write_project(tmp_path, gin_import=False)
    proc = run(
        "experiments.train", "--gin_file=exp.gin", f"--workdir={tmp_path / 'r'}", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "ScaledStep" in error_line(proc, "train")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("module_text", "flag", "expected"),
    [
        (None, "--import=nope", "--import=nope: no module named 'nope'"),
        ("raise RuntimeError('broken on purpose')", "--import=broken", "broken on purpose"),
        (None, "--import=not-a-name", "is not a module name"),
    ],
)
def test_import_errors_are_one_line(tmp_path: Path, module_text, flag, expected):
    write_project(tmp_path, gin_import=False)
    if module_text:
        (tmp_path / "broken.py").write_text(module_text)
    proc = run(
        "experiments.train", flag, "--gin_file=exp.gin", f"--workdir={tmp_path / 'r'}", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = error_line(proc, "train")
    assert expected in line and len(line) < 700
    assert not (tmp_path / "r").exists()


def test_analyze_import(tmp_path: Path):
    proc = run("experiments.analyze", "--import=nope", f"--workdir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--import=nope: no module named 'nope'" in error_line(proc, "analyze")


def test_gin_folder_is_importable_only_while_parsed(tmp_path: Path, monkeypatch):
    """In-process: the folder of a gin file that imports nothing is not left on sys.path."""
    import sys

    (tmp_path / "plain.gin").write_text("train.num_steps = 3\n")
    (tmp_path / "mod_here.py").write_text("X = 1\n")
    before = list(sys.path)
    import dirgrad_opt.training  # noqa: F401 - registers train

    user_modules.parse([str(tmp_path / "plain.gin")], [])
    assert sys.path == before
    (tmp_path / "uses.gin").write_text("import mod_here\ntrain.num_steps = 3\n")
    user_modules.parse([str(tmp_path / "uses.gin")], [])
    assert str(tmp_path) in sys.path  # kept: a module was imported from it
    assert user_modules.header().count(user_modules.PATH_MARKER) == 1
    monkeypatch.setattr(sys, "path", before)
    sys.modules.pop("mod_here", None)
