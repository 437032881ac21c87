"""Atomic file output: write to a temporary sibling, fsync, then rename over the target.

A crash, SIGKILL or Ctrl-C at any moment leaves either the old file (or nothing) or the complete
new file, never a partial one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_MARKER = ".deblurcli-tmp-"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed onto it.

    The temporary file keeps ``target``'s suffix so encoders that choose the format by extension
    work unchanged. On any exception (KeyboardInterrupt included) the temporary file is removed
    and ``target`` is left as it was. The result gets the permissions a plain ``open`` would
    give it (``0o666`` less the umask), or keeps those of the file it replaces.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}{TEMP_MARKER}", suffix=target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _mode_for(target: Path) -> int:
    """``target``'s current permission bits, or those of a new file under the current umask
    (``mkstemp`` creates its file as 0o600, which would hide outputs from other users)."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
