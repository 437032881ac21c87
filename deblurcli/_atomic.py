"""Atomic, claim-at-write-time file output.

Every file is written to a temporary sibling, fsynced, and only then *published* under its
final name, so a crash, SIGKILL or Ctrl-C leaves either nothing (or the old file) or the complete
new file, never a partial one.

Publishing without ``overwrite`` is a hard link of the finished temporary file to the target
(``link(2)`` fails when the target exists), so the existence check happens at the moment of
writing: of two processes writing the same file, exactly one succeeds and the other gets
:class:`OutputExistsError` for that file, and nothing is replaced. With ``overwrite`` the
temporary file is renamed over the target.

:func:`write_files` publishes several files as one unit (an image and its kernel files): all are
staged first, and if any cannot be published the ones already published are taken back, so an
item's files land together or not at all.

Temporary names carry the host and process id (``.<stem>.deblurcli-tmp-<host>-<pid>-<random>``);
:func:`clean_stale_temps` removes those whose process is gone (or that are older than a day).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

TEMP_MARKER = ".deblurcli-tmp-"
"""Part of every temporary file name; never part of a real output name."""
STALE_AFTER_S = 24 * 3600
"""Temporary files older than this are stale whoever made them."""
_UNNAMED_STALE_AFTER_S = 3600
"""Temporary files without host/pid in their name (older versions) are stale after an hour."""
_NO_LINK_ERRNOS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK,
                   errno.EXDEV}  # fmt: skip
_TEMP_RE = re.compile(re.escape(TEMP_MARKER) + r"(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]+")

Content = bytes | Callable[[Path], None]
"""What :func:`write_files` writes: the bytes, or a function that writes the file it is given."""


class OutputExistsError(FileExistsError):
    """The target appeared before it could be claimed (another run wrote it); nothing replaced."""

    def __init__(self, target: Path) -> None:
        super().__init__(errno.EEXIST, "already exists (written by another run?); not replaced",
                         str(target))  # fmt: skip
        self.target = target

    def __str__(self) -> str:
        return f"{self.target}: {self.strerror}"


def _host() -> str:
    name = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:24]
    return name or "host"


def temp_name(target: Path) -> Path:
    """A fresh temporary path beside ``target`` that keeps its suffix (encoders pick by it)."""
    token = secrets.token_hex(4)
    stem = target.stem[:120]  # keep the name within the file system's 255-byte limit
    name = f".{stem}{TEMP_MARKER}{_host()}-{os.getpid()}-{token}{target.suffix}"
    return target.with_name(name)


def _new_temp(target: Path) -> Path:
    """Create an empty temporary file beside ``target`` (permissions ``0o666`` less umask)."""
    for _ in range(100):
        tmp = temp_name(target)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(target.parent))


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Give the finished ``tmp`` its final name; without ``overwrite`` never replace anything.

    Raises:
        OutputExistsError: ``overwrite`` is false and ``target`` exists (checked atomically).
    """
    if overwrite:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, target.stat().st_mode & 0o7777)  # keep the replaced file's mode
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise OutputExistsError(target) from None
    except OSError as err:
        if err.errno not in _NO_LINK_ERRNOS:
            raise
        # No hard links here (some network/FAT file systems): claim the name with an exclusive
        # create, then rename the finished file onto the claimed (empty) placeholder.
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise OutputExistsError(target) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and published.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``target``
    is left as it was. The result gets the permissions a plain ``open`` would give it
    (``0o666`` less the umask), or keeps those of the file it replaces.

    Args:
        target: The final file name; missing parent folders are created.
        overwrite: Replace an existing ``target``. When false the target is claimed at publish
            time and :class:`OutputExistsError` is raised if it exists by then.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(target)
    try:
        yield tmp
        _fsync(tmp)
        _publish(tmp, target, overwrite=overwrite)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes, *,
                       overwrite: bool = True) -> None:  # fmt: skip
    """Write ``data`` to ``target`` atomically (see :func:`atomic_path`)."""
    with atomic_path(target, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def write_files(files: Mapping[Path, Content], *, overwrite: bool = False) -> None:
    """Write several files as one unit: all of them land, or none of them.

    Every file is staged as a finished, fsynced temporary file before the first is published.
    Without ``overwrite`` each target is claimed atomically at publish time; if one is taken
    (or publishing fails otherwise), the files this call already published are removed again.
    With ``overwrite`` the replaced files are kept as hard-linked backups until every file is
    in place, and restored on failure.

    Args:
        files: Target path → bytes, or a function writing the given temporary path.
        overwrite: Replace existing targets.

    Raises:
        OutputExistsError: a target exists and ``overwrite`` is false (nothing was written).
        OSError: a file could not be written (nothing was written); ``filename`` names it.
    """
    staged: list[tuple[Path, Path]] = []
    published: list[Path] = []
    backups: dict[Path, Path] = {}
    try:
        for target, content in files.items():
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = _new_temp(target)
            staged.append((tmp, target))
            try:
                if isinstance(content, bytes):
                    tmp.write_bytes(content)
                else:
                    content(tmp)
                _fsync(tmp)
            except OSError as err:
                if err.filename in (None, str(tmp)):
                    err.filename = str(target)
                raise
        for tmp, target in staged:
            if overwrite and target.is_file():
                backup = temp_name(target)
                with contextlib.suppress(OSError):
                    os.link(target, backup)
                    backups[target] = backup
            _publish(tmp, target, overwrite=overwrite)
            published.append(target)
        for folder in {target.parent for _, target in staged}:
            _fsync_dir(folder)
    except BaseException:
        for target in published:
            with contextlib.suppress(OSError):
                if target in backups:
                    os.replace(backups.pop(target), target)
                else:
                    target.unlink()
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    finally:
        for backup in backups.values():
            with contextlib.suppress(FileNotFoundError):
                backup.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists but belongs to someone else
        return True
    return True


def is_stale_temp(path: Path, *, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file left behind by a run that no longer exists.

    Stale: made on this host by a process that is gone, or older than :data:`STALE_AFTER_S`
    (an hour for names without host and pid, from older versions).
    """
    name = path.name
    if not name.startswith(".") or TEMP_MARKER not in name:
        return False
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    match = _TEMP_RE.search(name)
    if match is None:
        return age > _UNNAMED_STALE_AFTER_S
    if match["host"] == _host() and not _pid_alive(int(match["pid"])):
        return True
    return age > STALE_AFTER_S


def clean_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove stale temporary files (see :func:`is_stale_temp`) directly inside ``folder``.

    Returns:
        The files removed; a missing or unreadable folder removes nothing.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        if entry.is_file(follow_symlinks=False) and is_stale_temp(path):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


__all__ = [
    "STALE_AFTER_S",
    "TEMP_MARKER",
    "Content",
    "OutputExistsError",
    "atomic_path",
    "atomic_write_bytes",
    "clean_stale_temps",
    "is_stale_temp",
    "temp_name",
    "write_files",
]
