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


def closed_to_others(path: Path) -> Path | None:
    """The first folder on the way to ``path`` (``path`` included) that other users may not enter, or None."""
    for folder in [*reversed(Path(path).resolve().parents), Path(path).resolve()]:
        if not folder.stat().st_mode & 0o001:
            return folder
    return None


def run_unprivileged(args, env=None) -> subprocess.CompletedProcess:
    """Run a command as this user, or as nobody through util-linux's ``setpriv`` when the tests run as root.

    Skips the calling test, saying why, when running as root without ``setpriv``, when nobody cannot enter the
    checkout (e.g. a clone inside ``mktemp -d``'s 0700 folder) or when nobody cannot run this Python."""
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot check permissions as an unprivileged user")
        closed = closed_to_others(ROOT)
        if closed is not None:
            pytest.skip(
                f"running as root in a checkout nobody may enter ({closed} is mode {closed.stat().st_mode & 0o777:o}): "
                f"cannot check permissions as nobody; `chmod o+x {closed}` to run this check"
            )
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
