"""The worker's state folder: a container's non-root user in a root-owned working directory.

The image runs the worker as a non-root user in a root-owned ``/app``, and Faust creates its data
folder in the working directory by default. These tests reproduce that without Docker: the same
folder creation, run as ``nobody`` (``setpriv``) with a root-owned working directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="switching to another user needs root and setpriv (util-linux)",
)


@pytest.fixture
def root_owned_cwd() -> Iterator[Path]:
    """A root-owned folder that everyone may enter and no one else may write: the image's /app."""
    path = Path(tempfile.mkdtemp(prefix="feedbackloop-app-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as_nobody(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "PYTHONPATH": str(ROOT),
        # Nothing listens there; the producer the app builds never gets to send anything.
        "FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        **env,
    }
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-c", code],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_faust_default_data_folder_in_a_root_owned_cwd_is_a_permission_error(root_owned_cwd: Path) -> None:
    # The bug as the image had it: Faust's default datadir is relative to the working directory.
    run = _as_nobody("import faust; faust.App('repro')._create_directories()", root_owned_cwd)
    assert run.returncode != 0
    assert "PermissionError" in run.stderr


def test_the_worker_names_the_setting_when_it_cannot_write_its_state_folder(root_owned_cwd: Path) -> None:
    code = (
        "from feedbackloop.worker import DataDirError, prepare_data_dir\n"
        "from infra.settings import Settings\n"
        "try:\n"
        "    prepare_data_dir(Settings())\n"
        "except DataDirError as exc:\n"
        "    print(exc)\n"
        "    raise SystemExit(3)\n"
    )
    run = _as_nobody(code, root_owned_cwd)
    assert run.returncode == 3, run.stderr
    assert "FEEDBACKLOOP_PIPELINE__DATA_DIR" in run.stdout
    assert str(root_owned_cwd) in run.stdout
    assert list(root_owned_cwd.iterdir()) == []


def test_with_the_setting_faust_creates_its_folders_there(root_owned_cwd: Path) -> None:
    state = Path(tempfile.mkdtemp(prefix="feedbackloop-state-"))
    try:
        os.chown(state, NOBODY, NOBODY)
        code = (
            "from feedbackloop.worker import prepare_data_dir\n"
            "from infra.settings import Settings\n"
            "from stream_processors.app import create_app\n"
            "settings = Settings()\n"
            "prepare_data_dir(settings)\n"
            "app, _ = create_app(settings)\n"
            "app._create_directories()\n"
            "print(app.conf.tabledir)\n"
        )
        run = _as_nobody(code, root_owned_cwd, FEEDBACKLOOP_PIPELINE__DATA_DIR=str(state / "faust"))
        assert run.returncode == 0, run.stderr
        tabledir = Path(run.stdout.strip().splitlines()[-1])
        assert tabledir.is_dir()
        assert tabledir.is_relative_to(state / "faust" / "feedbackloop")
        assert tabledir.stat().st_uid == NOBODY
        assert list(root_owned_cwd.iterdir()) == []
    finally:
        shutil.rmtree(state, ignore_errors=True)
