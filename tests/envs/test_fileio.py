"""File I/O: atomic writes (content, failure, umask mode), pickle-free loading, stale temp files, the folder lock."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from permissions import read_only_folder, run_unprivileged

from envs.fileio import (
    LOCK_FILE,
    RunLock,
    RunLockedError,
    atomic_torch_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_stale_temps,
    is_temp_name,
    torch_load,
)

ROOT = Path(__file__).resolve().parents[2]
HOLD = (
    "import sys, time\nfrom envs.fileio import RunLock\nRunLock(sys.argv[1], what='training').acquire()\n"
    "print('held', flush=True)\ntime.sleep(120)\n"
)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_a_plain_open_gets(tmp_path, umask):
    """Every atomic writer leaves a file with the mode open() would give under the same umask (not mkstemp's 0600)."""
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_torch_save({"w": torch.ones(2)}, tmp_path / "a.pt")
        atomic_write_bytes(tmp_path / "a.bin", b"overwritten")  # replacing a file: the new one's mode, same rule
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert _mode(tmp_path / "plain.txt") == want
    assert {n: _mode(tmp_path / n) for n in ("a.bin", "a.txt", "a.json", "a.pt")} == dict.fromkeys(
        ("a.bin", "a.txt", "a.json", "a.pt"), want
    )


def test_atomic_write_content_and_a_failed_write_keeps_the_old_file(tmp_path):
    """The content arrives whole; an exception mid-write leaves the previous file and no temp file behind."""
    path = tmp_path / "sub" / "eval.json"
    atomic_write_json(path, {"psnr": float("inf"), "t": (1, 2), "p": Path("/x"), "s": torch.tensor(3.5)})
    assert json.loads(path.read_text()) == {"psnr": "inf", "t": [1, 2], "p": "/x", "s": 3.5}
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_write(path) as f:
            f.write(b"half a fi")
            raise RuntimeError("disk on fire")
    assert json.loads(path.read_text())["psnr"] == "inf"
    assert sorted(p.name for p in path.parent.iterdir()) == ["eval.json"]


def test_torch_load_round_trip_and_clear_errors(tmp_path):
    """torch_load reads what atomic_torch_save wrote, and names the file when it is missing, corrupt or a pickle."""
    atomic_torch_save({"step": 3, "w": torch.arange(4.0)}, tmp_path / "c.pt")
    back = torch_load(tmp_path / "c.pt")
    assert back["step"] == 3 and torch.equal(back["w"], torch.arange(4.0))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        torch_load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        torch_load(tmp_path / "junk.pt")
    torch.save({"obj": socket.AddressFamily.AF_INET}, tmp_path / "pickle.pt")  # an arbitrary class: refused
    with pytest.raises(ValueError, match=r"pickle\.pt.*weights_only=True"):
        torch_load(tmp_path / "pickle.pt")


def test_clean_stale_temps_removes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    """kill -9 in the middle of an atomic write leaves its temp file; clean_stale_temps removes only such files."""
    code = (
        "import sys, time\nfrom envs.fileio import atomic_write\n"
        "with atomic_write(sys.argv[1]) as f:\n    f.write(b'x' * 1000); f.flush(); print('writing', flush=True)"
        "; time.sleep(120)\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "checkpoint.pt")], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    left = [p for p in tmp_path.iterdir()]
    assert len(left) == 1 and is_temp_name(left[0].name) and left[0].name.startswith(".checkpoint.pt.")
    keep = ["notes.tmp", ".notes.tmp", "ep_00001.npz", ".hidden", "a.b.c.tmp"]
    for name in keep:
        (tmp_path / name).write_text("mine")
    (tmp_path / ".dir.abc123.tmp").mkdir()  # a folder with a temp-like name is not ours
    old_style = [".ep_00003.npz.12345.tmp", ".checkpoint.pt.k3j9x_2a.tmp"]  # pid / mkstemp tokens
    for name in old_style:
        (tmp_path / name).write_bytes(b"partial")
    removed = clean_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([left[0].name, *old_style])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, ".dir.abc123.tmp"])
    assert not (tmp_path / "checkpoint.pt").exists()


def test_run_lock_refuses_a_second_process_naming_it_and_a_killed_holder_releases_it(tmp_path):
    """While a live process holds the lock, acquire() raises naming its pid, host and command; SIGKILL frees it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError) as info:
            RunLock(tmp_path, what="collection").acquire()
        message = str(info.value)
        for part in (f"pid {holder.pid}", socket.gethostname(), "training", "time.sleep(120)", str(tmp_path)):
            assert part in message
        assert info.value.holder["pid"] == holder.pid
        assert isinstance(info.value, RuntimeError)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(tmp_path, what="training") as lock:  # no stale lock after kill -9
        assert lock.held
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):  # a second lock in this process too
            RunLock(tmp_path).acquire()
    assert not lock.held and (tmp_path / LOCK_FILE).read_text() == ""  # released, details cleared
    RunLock(tmp_path).acquire().release()


@pytest.fixture
def ro_folder():
    """A folder an unprivileged user cannot write into."""
    with read_only_folder() as ro:
        yield ro


def test_run_lock_on_a_folder_that_cannot_be_written_is_an_oserror(ro_folder):
    """A read-only folder fails with PermissionError (as a user without rights: as nobody when tests run as root)."""
    code = (
        "import sys\nfrom envs.fileio import RunLock\ntry:\n    RunLock(sys.argv[1]).acquire()\n"
        "except PermissionError as e:\n    print('refused', e.filename)\n"
    )
    proc = run_unprivileged([sys.executable, "-c", code, str(ro_folder)])
    assert proc.stdout.strip() == f"refused {ro_folder / LOCK_FILE}", proc.stderr
    assert not (ro_folder / LOCK_FILE).exists()


def test_worldmodel_utils_keeps_the_moved_names():
    """worldmodel.utils re-exports the atomic writers and torch_load from envs.fileio (one implementation)."""
    import envs.fileio as fileio
    import worldmodel.utils as utils

    for name in ("atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "torch_load"):
        assert getattr(utils, name) is getattr(fileio, name) and name in utils.__all__
