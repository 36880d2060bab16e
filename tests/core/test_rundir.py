"""Run folders: plain names, overwrite only of marked folders, one live run per folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consortium.core import ClientApp, Workflow, run_workflow
from consortium.core.rundir import (
    LOCK,
    MARKER,
    RunDirError,
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
