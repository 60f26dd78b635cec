"""Every file loopprop writes is written atomically: a temporary file in the target's folder,
renamed over the target only once it is complete.

A save that fails half-way (a value the format cannot hold, a full disk, Ctrl-C) therefore
leaves the file that was there untouched, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A temporary path beside ``path``; renamed to ``path`` when the block ends without an
    exception, removed otherwise.

    ``suffix`` is the temporary file's extension, for writers that choose the format by it
    (matplotlib's ``savefig``, ``np.savetxt``). For writers that take a path, not a file.
    """
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.",
                               suffix=suffix or ".tmp")
    os.close(fd)
    try:
        yield tmp
        _keep_mode(target, tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fh)`` on a binary file that becomes ``path`` only when ``write`` returns."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())


def _keep_mode(target: str, tmp: str) -> None:
    """The new file gets the old file's permissions, or the usual ones for a new file
    (``mkstemp`` creates it readable by its owner only)."""
    try:
        mode = os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
