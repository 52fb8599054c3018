"""Atomic file writes: a reader sees the old file or the complete new one, never a partial write."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, IO, Union

__all__ = ["atomic_write", "atomic_write_bytes"]


def _default_mode(path: Path) -> int:
    """The existing file's permissions, else what the umask gives a new file."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Union[str, os.PathLike], write: Callable[[IO[bytes]], object], *, fsync_dir: bool = False) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, fsync it, give it the old file's
    permissions (or the umask's), and rename it onto ``path``. The temporary file is removed when
    ``write`` fails. ``fsync_dir`` also syncs the folder so the rename itself survives a power cut.
    Parent folders are created. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _default_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, mode)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync_dir:
        try:
            dfd = os.open(str(path.parent), os.O_RDONLY)
        except OSError:
            return path
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
    return path


def atomic_write_bytes(path: Union[str, os.PathLike], data: bytes, **kwargs) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda f: f.write(data), **kwargs)
