"""Reading and writing the user's files: the one home of the rules that keep them safe.

- Inputs must be regular files (a FIFO would block forever, a device or folder is not a config) and UTF-8.
- Outputs never replace what the user did not ask to replace: without ``force`` an existing path is refused,
  and the file is created exclusively (a hard link from a finished temp file, which fails if another writer
  got there first), so two writers cannot both pass a check-then-write. With ``force`` only a regular file is
  replaced, never a link, device or folder, and never one of the run's own inputs.
- A file appears whole or not at all: it is written to a temp file in the same folder, fsynced, then linked or
  renamed into place, and the folder is fsynced. The temp file is removed on any failure, including Ctrl-C and
  (through :func:`exit_on_sigterm`) a kill.
- Several files that belong together (a report and its picture) are published together: all temp files are
  written first, and a failure leaves none of the new files behind.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from planner.errors import QPlanError


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of a regular file; anything else is one :class:`QPlanError` line."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise QPlanError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise QPlanError(f"cannot read {what} {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        raise QPlanError(f"{what} {path} is not a regular file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise QPlanError(f"{what} {path} is not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise QPlanError(f"cannot read {what} {path}: {err.strerror or err}") from None


def check_output(path: str | Path, *, force: bool, inputs: Iterable[str | Path] = ()) -> Path:
    """Refuse, before any work is done, an output that exists (without ``force``), that is not a regular file,
    or that is one of ``inputs``."""
    path = Path(path)
    for given in inputs:
        if _same_file(path, Path(given)):
            raise QPlanError(f"{path} is one of this command's inputs; write the output elsewhere")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as err:
        raise QPlanError(f"cannot write {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        raise QPlanError(f"{path} exists and is not a regular file (a link, folder or device); not replacing it")
    if not force:
        raise QPlanError(f"{path} already exists; pass --force to overwrite it")
    return path


def write_files(files: dict[str | Path, str | bytes], *, force: bool = False,
                inputs: Iterable[str | Path] = ()) -> list[Path]:
    """Publish every ``path -> data`` as one unit under the module's rules; returns the paths written."""
    inputs = list(inputs)
    targets = [check_output(path, force=force, inputs=inputs) for path in files]
    temps: list[tuple[str, Path]] = []
    published: list[Path] = []
    try:
        for path, data in zip(targets, files.values()):
            temps.append((_write_temp(path, data), path))
        for tmp, path in temps:
            _publish(tmp, path, force)
            published.append(path)
        for folder in {path.parent for path in targets}:
            _fsync_dir(folder)
    except BaseException:
        for path in published:
            path.unlink(missing_ok=True)
        raise
    finally:
        for tmp, _ in temps:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    return targets


def write_file(path: str | Path, data: str | bytes, *, force: bool = False,
               inputs: Iterable[str | Path] = ()) -> Path:
    return write_files({path: data}, force=force, inputs=inputs)[0]


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so that ``finally`` blocks (temp-file cleanup) run on a kill."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _write_temp(path: Path, data: str | bytes) -> str:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp")
    except OSError as err:
        raise QPlanError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        os.unlink(tmp)
        raise QPlanError(f"cannot write {path}: {err.strerror or err}") from None
    return tmp


def _publish(tmp: str, path: Path, force: bool) -> None:
    try:
        if force:
            check_output(path, force=True)  # still a regular file (or gone) at the moment of replacing
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        raise QPlanError(f"{path} was created by someone else while qplan was writing it; nothing replaced") from None
    except OSError as err:
        raise QPlanError(f"cannot write {path}: {err.strerror or err}") from None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the file itself is synced
    finally:
        os.close(fd)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
