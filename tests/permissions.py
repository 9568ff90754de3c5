"""Permission checks in tests: run a command as a user without rights (as nobody when the tests run as root)."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534  # the unprivileged user id the checks run as when the tests run as root (root ignores mode bits)


def run_unprivileged(args, env=None) -> subprocess.CompletedProcess:
    """Run a command as this user, or as nobody through util-linux's ``setpriv`` when the tests run as root.

    Skips the calling test, saying why, when running as root without ``setpriv`` or when nobody cannot run this
    Python."""
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot check permissions as an unprivileged user")
        args = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    if os.geteuid() == 0 and "Permission denied" in proc.stderr and sys.executable in proc.stderr:
        pytest.skip(f"running as root, and nobody cannot run {sys.executable}")
    return proc


@contextlib.contextmanager
def read_only_folder():
    """A folder nobody may write into, inside a folder everybody may enter (pytest's tmp_path is root-only)."""
    base = Path(tempfile.mkdtemp(prefix="longdream-ro-"))
    base.chmod(0o755)
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        yield ro
    finally:
        ro.chmod(0o755)
        shutil.rmtree(base)
