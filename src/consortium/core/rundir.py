"""Run folders that cannot be turned against the files around them.

Three rules, enforced wherever consortium creates, resumes or replaces a run folder:

* **plain names**: a run name is one path component: not empty, not ``.`` or ``..``, no
  separator. A name can never point a run at its parent folder or elsewhere.
* **marked folders**: every folder consortium claims for a run gets a marker file,
  ``.consortium-run``. ``--overwrite`` (and the demo, which always replaces its folder) only
  ever empties a folder that holds the marker, so pointing it at a home folder, the output
  folder of all runs or anything else consortium did not create is an error, not a deletion.
* **one live run per folder**: a run holds an exclusive lock on ``.consortium.lock`` in its
  folder for as long as it runs (an OS file lock: it ends with the process, so a crashed run
  leaves no stale lock). A second run, a ``--resume`` or an ``--overwrite`` of a folder in use
  (or of a folder holding one in use) is refused.

Usage::

    with claim_run_dir(path, resume=False, overwrite=True):
        ...  # write the run; the folder is marked and locked until the block ends
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

try:  # POSIX; elsewhere folders are checked and marked but not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MARKER = ".consortium-run"
LOCK = ".consortium.lock"
_SEPARATORS = {"/", "\\", "\0"} | {s for s in (os.sep, os.altsep) if s}


class RunDirError(ValueError):
    """A run folder or run name that must not be used as asked; the message is one line."""


def check_run_name(name: str, what: str = "run name") -> str:
    """``name`` if it is one plain path component, else :class:`RunDirError`."""
    if not isinstance(name, str) or not name.strip():
        raise RunDirError(f"{what} must not be empty")
    if name in (".", ".."):
        raise RunDirError(f"{what} {name!r} names a folder, not a run: choose a plain name")
    if any(s in name for s in _SEPARATORS):
        raise RunDirError(f"{what} {name!r} must be a plain name, without path separators")
    return name


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Name ``path`` in an ``OSError`` raised inside the block.

    A full disk or a folder that turned read-only often shows up when a file object is
    written or closed, as an error without a file name; the one-line report of the command
    line needs to say which file.
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


def is_marked(path: str | Path) -> bool:
    """Whether ``path`` is a folder consortium claimed for a run."""
    return (Path(path) / MARKER).is_file()


class RunDirLock:
    """An exclusive lock on one run folder, released by :meth:`release` (or the ``with``).

    ``created``: the claim made the folder; ``fresh``: the folder held nothing of an earlier
    run when claimed (new, empty, or emptied by ``--overwrite``). See :func:`discard_untrained`.
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd
        self.created = False
        self.fresh = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text() or "{}")
        return f" (process {int(info['pid'])})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def lock_run_dir(path: str | Path) -> RunDirLock:
    """Lock ``path`` (an existing folder) for this process, or raise :class:`RunDirError`."""
    path = Path(path)
    lock_file = path / LOCK
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:  # pragma: no cover - Windows
        return RunDirLock(path, fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunDirError(
            f"{path} is in use by a live run{_holder(lock_file)}: wait for it to end or stop it"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid()}).encode())
    return RunDirLock(path, fd)


def _nested_in_use(path: Path) -> Path | None:
    """A folder below ``path`` that a live run holds, if any."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    for lock_file in path.rglob(LOCK):
        if lock_file.parent == path or lock_file.is_symlink():
            continue
        try:
            fd = os.open(lock_file, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return lock_file.parent
        finally:
            os.close(fd)  # closing releases a lock this probe took
    return None


def _empty(path: Path) -> None:
    """Remove everything in ``path`` but its lock file (held by this process meanwhile)."""
    for child in path.iterdir():
        if child.name == LOCK:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _contents(path: Path) -> list[str]:
    return sorted(c.name for c in path.iterdir() if c.name not in (LOCK, MARKER))


def claim_run_dir(
    path: str | Path, *, resume: bool = False, overwrite: bool = False, what: str = "a run"
) -> RunDirLock:
    """Make ``path`` this process's run folder: checked, emptied if asked, marked and locked.

    Parameters
    ----------
    path
        The run folder (created with its parents when missing).
    resume
        Continue what the folder holds: it must be a marked run folder (or empty).
    overwrite
        Start over: the folder's contents are removed, but only when it holds the marker and
        neither it nor a folder inside it is in use.
    what
        How the folder is named in messages ("a run", "unlearning results", ...).

    Returns
    -------
    The lock; release it (or use it as a context manager) when the run ends.
    """
    path = Path(path)
    check_run_dir(path, resume=resume, overwrite=overwrite, what=what)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    existing = _contents(path)
    lock = lock_run_dir(path)
    try:
        if overwrite and not resume and existing:
            busy = _nested_in_use(path)
            if busy is not None:
                raise RunDirError(f"{busy} is in use by a live run: not overwriting {path}")
            _empty(path)
        with writing(path / MARKER):
            (path / MARKER).write_text(json.dumps({"consortium": "run folder"}) + "\n")
    except BaseException:
        lock.release()
        raise
    lock.created = created
    lock.fresh = not existing or (overwrite and not resume)
    return lock


def check_run_dir(
    path: str | Path, *, resume: bool = False, overwrite: bool = False, what: str = "a run"
) -> None:
    """The checks of :func:`claim_run_dir` that need no change on disk (so a run can be
    refused before its data is built); raises :class:`RunDirError`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path} is not a folder")
    _check_writable(path)
    if not path.is_dir():
        return
    existing = _contents(path)
    if existing and not is_marked(path) and (resume or overwrite):
        raise RunDirError(
            f"{path} was not created by consortium (no {MARKER} marker): refusing to "
            f"{'resume' if resume else 'delete'} it; choose another folder"
        )
    if existing and not (resume or overwrite):
        raise RunDirError(
            f"{path} already holds {what}: pass --resume or --overwrite (to continue it or to "
            "start over)"
        )


def _check_writable(path: Path) -> None:
    """An ``OSError`` naming the folder when ``path`` could not be made or written: the
    nearest folder that exists is not a folder, is read-only or is not ours to write. Found
    here, before the data is built, rather than when the run makes its folder."""
    here = path.absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(here))
    if not os.access(here, os.W_OK | os.X_OK):
        code = errno.EROFS if os.statvfs(here).f_flag & os.ST_RDONLY else errno.EACCES
        raise OSError(code, os.strerror(code), str(here))


def discard_untrained(lock: RunDirLock, keep: str = "checkpoint.npz") -> bool:
    """Undo the claim of a run that failed before it saved anything worth keeping.

    When ``lock``'s folder was fresh and no file named ``keep`` (a checkpoint) exists below
    it, its contents are removed (the folder too, when the claim created it), so the next,
    corrected attempt starts as the first one did instead of finding "a run" in its way.
    Returns whether it discarded. Call it after the lock was released.
    """
    path = lock.path
    if not lock.fresh or not path.is_dir() or any(path.rglob(keep)):
        return False
    if lock.created:
        shutil.rmtree(path, ignore_errors=True)
    else:
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    return True
