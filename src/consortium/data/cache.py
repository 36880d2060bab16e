"""The user cache directory: built data sets and backbones are kept there, never downloaded.

``$CONSORTIUM_CACHE_DIR``, else ``$XDG_CACHE_HOME/consortium``, else ``~/.cache/consortium``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """Where built data sets and backbones are kept (see the module docstring)."""
    if os.environ.get("CONSORTIUM_CACHE_DIR"):
        return Path(os.environ["CONSORTIUM_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "consortium"


def publish(target: Path, write: Callable[[Path], None], folder: bool = True) -> Path:
    """Create ``target`` atomically: ``write`` fills a temporary path in the same folder,
    renamed into place once complete (a crash never leaves half an entry; when another
    process published first, its entry is kept)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=target.name + ".", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        write(tmp)
        if target.exists():
            raise FileExistsError(target)
        tmp.rename(target)
    except FileExistsError:
        pass
    except BaseException:
        _remove(tmp)
        raise
    _remove(tmp)
    return target


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
