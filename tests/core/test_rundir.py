"""Run folders: plain names, overwrite only of marked folders, one live run per folder."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from consortium.core import ClientApp, Workflow, run_workflow, rundir
from consortium.core.rundir import (
    LOCK,
    MARKER,
    RunDirError,
    check_run_dir,
    check_run_name,
    claim_run_dir,
    is_marked,
    lock_run_dir,
)
from consortium.runtime import LocalRuntime

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "../x", "/abs", "a\\b", "x\0y"])
def test_names_that_are_not_plain_are_refused(name):
    with pytest.raises(RunDirError) as err:
        check_run_name(name)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["demo", "run-1", "a.b", "...", "fedavg_digits"])
def test_plain_names_pass(name):
    assert check_run_name(name) == name


def test_overwrite_never_empties_a_folder_consortium_did_not_create(tmp_path):
    precious = tmp_path / "home"
    (precious / "docs").mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    for flags in ({"overwrite": True}, {"resume": True}):
        with pytest.raises(RunDirError, match="not created by consortium"):
            claim_run_dir(precious, **flags)
    with pytest.raises(RunDirError, match="already holds"):
        claim_run_dir(precious)
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert (precious / "docs").is_dir() and not is_marked(precious)


def test_a_marked_folder_is_replaced_and_stays_marked(tmp_path):
    run = tmp_path / "run"
    with claim_run_dir(run):
        (run / "old.txt").write_text("x")
        (run / "method").mkdir()
        os.symlink(tmp_path, run / "link-outside")  # removed as a link, never followed
        (tmp_path / "outside.txt").write_text("kept")
    assert is_marked(run)
    with claim_run_dir(run, overwrite=True):
        assert sorted(p.name for p in run.iterdir()) == sorted([LOCK, MARKER])
    assert (tmp_path / "outside.txt").read_text() == "kept"
    with claim_run_dir(run, resume=True):
        pass


def test_a_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="not a folder"):
        claim_run_dir(tmp_path / "f", overwrite=True)


def hold(folder: Path, *, claim: bool = True) -> subprocess.Popen:
    """Another process that holds ``folder`` as a live run until it is killed."""
    call = "claim_run_dir(p)" if claim else "lock_run_dir(p)"
    code = (
        "import sys, time, pathlib\n"
        "from consortium.core.rundir import claim_run_dir, lock_run_dir\n"
        f"p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True, exist_ok=True); h = {call}\n"
        "print('held', flush=True); time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_in_use_cannot_be_resumed_overwritten_or_run_twice(tmp_path):
    run = tmp_path / "run"
    other = hold(run)
    try:
        for flags in ({"resume": True}, {"overwrite": True}):
            with pytest.raises(RunDirError, match=rf"in use by a live run \(process {other.pid}\)"):
                claim_run_dir(run, **flags)
        with pytest.raises(RunDirError, match="in use"):
            lock_run_dir(run)
        with pytest.raises(RunDirError, match="in use"):
            run_workflow(_Idle(), idle_grid(), run_dir=run, progress=False)
        assert is_marked(run)
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    # the OS dropped the lock with the process: no stale lock to clean up
    with claim_run_dir(run, resume=True) as lock:
        assert lock.held


def test_overwrite_of_a_folder_holding_a_live_run_is_refused(tmp_path):
    outer = tmp_path / "experiment"
    with claim_run_dir(outer):
        (outer / "keep.json").write_text("{}")
    inner = hold(outer / "unlearn-class2", claim=False)
    try:
        with pytest.raises(RunDirError, match="unlearn-class2 is in use by a live run"):
            claim_run_dir(outer, overwrite=True)
        assert (outer / "keep.json").exists()
    finally:
        inner.send_signal(signal.SIGKILL)
        inner.wait()
    with claim_run_dir(outer, overwrite=True):
        assert not (outer / "unlearn-class2").exists()


def test_the_lock_is_released_when_a_run_fails(tmp_path):
    class Broken(_Idle):
        def run_round(self, grid, rnd):
            raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        run_workflow(Broken(), idle_grid(), run_dir=tmp_path / "run", progress=False)
    start = time.monotonic()
    with lock_run_dir(tmp_path / "run"):  # not held any more, by this process or another
        pass
    assert time.monotonic() - start < 1


# a workflow that does nothing, to run the loop itself


class _Idle(Workflow):
    name = "idle"

    def run_round(self, grid, rnd):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def idle_grid():
    return LocalRuntime(ClientApp(), lambda cid: None, 1)


# -- checked before anything is made, undone when nothing was trained -----------------------


def test_check_run_dir_refuses_what_claim_refuses_and_makes_nothing(tmp_path):
    from consortium.core.rundir import check_run_dir

    new = tmp_path / "a" / "b"
    check_run_dir(new)  # a folder still to be made is fine ...
    assert not (tmp_path / "a").exists()  # ... and is not made
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("someone's")
    with pytest.raises(RunDirError, match="already holds a run"):
        check_run_dir(used)
    with pytest.raises(RunDirError, match="not created by consortium"):
        check_run_dir(used, overwrite=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="is not a folder"):
        check_run_dir(tmp_path / "file")


def test_a_folder_that_cannot_be_made_or_written_is_an_os_error_naming_it(tmp_path, monkeypatch):
    import errno

    from consortium.core.rundir import check_run_dir

    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as caught:  # a file where a parent folder would go
        check_run_dir(tmp_path / "file" / "sub" / "run")
    assert caught.value.errno == errno.ENOTDIR and caught.value.filename == str(tmp_path / "file")
    assert not isinstance(caught.value, RunDirError)  # a file-system error, not a setting

    writable = {str(tmp_path): True, str(tmp_path / "locked"): False}
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: writable.get(str(p), real_access(p, mode)))
    (tmp_path / "locked").mkdir()
    for target in (tmp_path / "locked", tmp_path / "locked" / "new" / "run"):
        with pytest.raises(OSError) as caught:
            check_run_dir(target)
        assert caught.value.errno in (errno.EACCES, errno.EROFS)
        assert caught.value.filename == str(tmp_path / "locked")
        with pytest.raises(OSError):
            claim_run_dir(target)  # the claim checks the same, and makes nothing
        assert list((tmp_path / "locked").iterdir()) == []
    check_run_dir(tmp_path / "free" / "run")  # a writable parent is fine


def test_a_claim_that_trained_nothing_is_undone(tmp_path):
    from consortium.core.rundir import discard_untrained

    made = tmp_path / "made" / "run"
    lock = claim_run_dir(made)
    (made / "config.toml").write_text("x")
    lock.release()
    assert lock.created and lock.fresh and discard_untrained(lock)
    assert not made.exists() and (tmp_path / "made").exists()  # parents are not ours to remove

    empty = tmp_path / "empty"
    empty.mkdir()
    lock = claim_run_dir(empty)
    (empty / "config.toml").write_text("x")
    lock.release()
    assert not lock.created and discard_untrained(lock)
    assert empty.is_dir() and list(empty.iterdir()) == []  # the user's folder stays


def test_a_claim_is_kept_once_something_trained_or_when_it_resumed(tmp_path):
    from consortium.core.rundir import discard_untrained

    run = tmp_path / "run"
    lock = claim_run_dir(run)
    (run / "fedavg").mkdir()
    (run / "fedavg" / "checkpoint.npz").write_bytes(b"trained")
    lock.release()
    assert not discard_untrained(lock) and (run / "fedavg" / "checkpoint.npz").exists()

    (run / "fedavg" / "checkpoint.npz").unlink()
    lock = claim_run_dir(run, resume=True)  # an earlier run's folder: never ours to discard
    lock.release()
    assert not lock.fresh and not discard_untrained(lock) and (run / "fedavg").exists()


# -- the exact reasons, the marker, the lock file and the claim's flags ---------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "run name must not be empty"),
        ("  ", "run name must not be empty"),
        (None, "run name must not be empty"),
        ("..", "run name '..' names a folder, not a run: choose a plain name"),
        ("a/b", "run name 'a/b' must be a plain name, without path separators"),
    ],
)
def test_a_refused_name_says_why(name, reason):
    with pytest.raises(RunDirError, match=f"^{re.escape(reason)}$"):
        check_run_name(name)
    with pytest.raises(RunDirError, match=f"^{re.escape(reason.replace('run', 'method', 1))}$"):
        check_run_name(name, "method name")


def test_a_claimed_folder_holds_the_marker_and_a_lock_naming_this_process(tmp_path):
    run = tmp_path / "a" / "run"
    with claim_run_dir(str(run)) as lock:
        assert lock.path == run and lock.held and lock.created and lock.fresh
        assert (run / MARKER).read_text() == '{"consortium": "run folder"}\n'
        assert json.loads((run / LOCK).read_text()) == {"pid": os.getpid()}
    assert not lock.held
    with lock_run_dir(str(run)) as again:
        assert again.path == run and again.held


def test_the_lock_file_is_readable_by_others_and_written_only_by_its_owner(tmp_path):
    old = os.umask(0o022)
    try:
        with lock_run_dir(tmp_path):
            assert stat.S_IMODE((tmp_path / LOCK).stat().st_mode) == 0o644
    finally:
        os.umask(old)


def _held_here(folder: Path, content: str) -> int:
    """Hold ``folder``'s lock through a second open file of this process (flock locks belong
    to the open file, so this process's own claim is refused as another process's would be)."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, content.encode())
    return fd


@pytest.mark.parametrize(
    ("content", "holder"), [('{"pid": 4321}', " (process 4321)"), ("", ""), ("garbage", "")]
)
def test_a_held_folder_names_its_holder_when_the_lock_file_says(tmp_path, content, holder):
    fd = _held_here(tmp_path, content)
    try:
        reason = f"{tmp_path} is in use by a live run{holder}: wait for it to end or stop it"
        with pytest.raises(RunDirError, match=f"^{re.escape(reason)}$"):
            lock_run_dir(tmp_path)
    finally:
        os.close(fd)


def test_a_nested_lock_file_that_cannot_be_opened_does_not_end_the_search(tmp_path):
    outer = tmp_path / "experiment"
    with claim_run_dir(outer):
        (outer / "a" / LOCK).mkdir(parents=True)  # found first, and cannot be opened
        (outer / "a" / "b").mkdir()
    fd = _held_here(outer / "a" / "b", "")
    try:
        with pytest.raises(RunDirError, match=f"^{re.escape(str(outer / 'a' / 'b'))} is in use"):
            claim_run_dir(outer, overwrite=True)
    finally:
        os.close(fd)
    assert (outer / "a" / "b").is_dir()


def test_the_refusal_names_what_the_folder_holds(tmp_path):
    (tmp_path / "x").write_text("someone's")
    start_over = ": pass --resume or --overwrite (to continue it or to start over)"
    with pytest.raises(RunDirError, match=f"^{re.escape(f'{tmp_path} already holds a run')}"):
        claim_run_dir(tmp_path)
    with pytest.raises(RunDirError, match=f"{re.escape(start_over)}$"):
        check_run_dir(tmp_path)
    with pytest.raises(RunDirError, match="already holds unlearning results: pass"):
        claim_run_dir(tmp_path, what="unlearning results")
    for flag, verb in (("resume", "resume"), ("overwrite", "delete")):
        reason = (
            f"{tmp_path} was not created by consortium (no {MARKER} marker): refusing to "
            f"{verb} it; choose another folder"
        )
        with pytest.raises(RunDirError, match=f"^{re.escape(reason)}$"):
            claim_run_dir(tmp_path, **{flag: True})


def test_resume_wins_over_overwrite_and_only_a_start_over_is_fresh(tmp_path):
    run = tmp_path / "run"
    with claim_run_dir(run):
        (run / "checkpoint.npz").write_text("x")
    with claim_run_dir(run, resume=True, overwrite=True) as lock:
        assert (run / "checkpoint.npz").exists() and not lock.fresh and not lock.created
    with claim_run_dir(run, resume=True) as lock:
        assert not lock.fresh
    with claim_run_dir(run, overwrite=True) as lock:
        assert not (run / "checkpoint.npz").exists() and lock.fresh and not lock.created


def test_a_marker_that_cannot_be_written_is_an_os_error_naming_it(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # no file name, like a flush

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as caught:
        claim_run_dir(tmp_path / "run")
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / "run" / MARKER)
    monkeypatch.undo()
    with lock_run_dir(tmp_path / "run"):  # the failed claim let go of its lock
        pass


def test_without_os_locks_folders_are_still_checked_and_marked(tmp_path, monkeypatch):
    """Where ``fcntl`` is missing (Windows), claims work and release, but do not exclude."""
    monkeypatch.setattr(rundir, "fcntl", None)
    run = tmp_path / "run"
    with claim_run_dir(run) as lock:
        assert lock.held and lock.path == run and is_marked(run)
        (run / "sub").mkdir()
        (run / "sub" / LOCK).write_text("")
        with lock_run_dir(run) as second:
            assert second.held and second.path == run
    assert not lock.held
    with claim_run_dir(run, overwrite=True):
        assert not (run / "sub").exists()


def test_the_os_error_of_an_unusable_folder_says_why(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as caught:
        check_run_dir(tmp_path / "file" / "run")
    assert caught.value.strerror == os.strerror(errno.ENOTDIR)
    # writable but not enterable: neither is enough alone
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: not mode & os.X_OK if p == tmp_path else real_access(p, mode)
    )
    with pytest.raises(OSError) as caught:
        check_run_dir(tmp_path / "run")
    assert caught.value.errno == errno.EACCES and caught.value.strerror == os.strerror(errno.EACCES)
    # on a read-only file system
    read_only = SimpleNamespace(f_flag=os.ST_RDONLY)
    monkeypatch.setattr(os, "statvfs", lambda p: read_only)
    with pytest.raises(OSError) as caught:
        check_run_dir(tmp_path / "run")
    assert caught.value.errno == errno.EROFS and caught.value.filename == str(tmp_path)


def _stuck(monkeypatch, name: str, error: type[OSError]) -> None:
    """Make removing files called ``name`` fail with ``error`` (a file another user owns, or
    one another process removed first)."""
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.path.basename(path) == name:
            raise error(errno.EPERM if error is PermissionError else errno.ENOENT, name)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)


def test_discarding_is_best_effort_and_never_raises(tmp_path, monkeypatch):
    from consortium.core.rundir import discard_untrained

    made = tmp_path / "made"
    lock = claim_run_dir(made)
    (made / "sub").mkdir()
    (made / "sub" / "stuck").write_text("")
    lock.release()
    _stuck(monkeypatch, "stuck", PermissionError)
    assert discard_untrained(lock)
    assert (made / "sub" / "stuck").exists() and not (made / MARKER).exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (tmp_path / "elsewhere").mkdir()
    lock = claim_run_dir(mine)
    (mine / "sub").mkdir()
    (mine / "sub" / "stuck").write_text("")
    (mine / "done").mkdir()
    (mine / "done" / "f").write_text("")
    os.symlink(tmp_path / "elsewhere", mine / "link")
    (mine / "gone").write_text("")
    lock.release()
    _stuck(monkeypatch, "gone", FileNotFoundError)
    assert discard_untrained(lock)
    assert sorted(p.name for p in mine.iterdir()) == ["gone", "sub"]  # the two that failed
    assert (tmp_path / "elsewhere").is_dir()  # the link went, never what it points at


def test_a_bare_lock_is_no_claim_and_is_never_discarded(tmp_path):
    """``created`` and ``fresh`` describe a claim; a folder only locked keeps its contents."""
    from consortium.core.rundir import discard_untrained

    (tmp_path / "results.json").write_text("{}")
    lock = lock_run_dir(tmp_path)
    assert lock.created is False and lock.fresh is False
    lock.release()
    assert not discard_untrained(lock) and (tmp_path / "results.json").exists()
