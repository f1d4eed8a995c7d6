"""The cache folder, content keys and atomic writes: a file or folder is there whole or not at all."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from safetensors import SafetensorError

from .errors import TenshotError


@contextmanager
def _refused_as_one_line(target: Path):
    """A write the environment refuses (full disk, no permission, read-only or failing device) becomes one
    :class:`TenshotError` line naming ``target``."""
    try:
        yield
    except (OSError, SafetensorError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
        raise TenshotError(f"{target}: could not write ({reason}); nothing half-written was kept, what was there before is unchanged") from None


KEY_BATCH = 256  # images read at a time when content_key hashes an image set from disk
KEY_CHUNK = 1 << 24  # bytes read at a time when content_key hashes a file


def cache_root() -> Path:
    """Where cached results are kept: ``$TENSHOT_CACHE`` or ``~/.cache/tenshot``."""
    return Path(os.environ.get("TENSHOT_CACHE") or Path.home() / ".cache" / "tenshot")


def content_key(*parts) -> str:
    """SHA-256 over strings and arrays (shape, dtype and bytes). An image set read from disk when indexed
    (:class:`tenshot.data.images.ImageFiles`) is read batch by batch and keyed as the uint8 array it loads as; a
    :class:`~pathlib.Path` is keyed by the file's bytes, read in chunks."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.shape}{part.dtype}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, Path):
            with part.open("rb") as handle:
                while chunk := handle.read(KEY_CHUNK):
                    digest.update(chunk)
        elif hasattr(part, "paths"):
            digest.update(f"{tuple(part.shape)}uint8".encode())
            for start in range(0, len(part), KEY_BATCH):
                digest.update(np.ascontiguousarray(part[start : start + KEY_BATCH]).tobytes())
        else:
            digest.update(str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _plain_mode(mode: int) -> int:
    """``mode`` less the umask: what a plain ``open`` or ``mkdir`` gives (``mkstemp``/``mkdtemp`` give 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


# what replace_file and replace_folder stage a write in: ".NAME-" and tempfile's eight random characters
STAGING_PATTERN = re.compile(r"^\..+-[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


def remove_staging(folder: Path) -> None:
    """Delete the staging files and folders a process killed mid-write left in ``folder`` (the write they held
    never replaced its target, so nothing is lost)."""
    stale = [path for path in folder.iterdir() if STAGING_PATTERN.match(path.name)] if folder.is_dir() else []
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def replace_file(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(staging)``, a file of the same suffix in the same folder renamed over it; a
    write the environment refuses is one :class:`TenshotError` line."""
    with _refused_as_one_line(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}-", suffix=path.suffix, dir=path.parent)
        os.close(handle)
        staging = Path(name)
        try:
            staging.chmod(_plain_mode(0o666))
            write(staging)
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)


def replace_folder(target: Path, write: Callable[[Path], None], *, durable: bool = False, complete: str | None = None) -> None:
    """Write a folder through ``write(staging)`` and rename it over ``target`` (never half-written).

    An existing ``target`` is first renamed aside (``.NAME-XXXXXXXX.old``) and deleted only once the new folder
    is in place; if that rename fails it is put back. ``durable`` syncs every file to disk before the rename (a
    checkpoint survives a crash). ``complete`` names the marker file ``write`` writes last: a ``target`` holding
    it, finished by another process meanwhile, is kept rather than replaced, as someone may be reading it. A
    write the environment refuses (full disk, no permission) is one :class:`TenshotError` line, and the
    previous ``target`` stays as it was."""

    def finished() -> bool:
        return complete is not None and (target / complete).is_file()

    with _refused_as_one_line(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        aside = None
        try:
            staging.chmod(_plain_mode(0o777))
            write(staging)
            if durable:
                for file in staging.rglob("*"):
                    if file.is_file():
                        with open(file, "rb") as handle:
                            os.fsync(handle.fileno())
            if target.exists() and not finished():
                aside = _moved_aside(target)
            try:
                os.replace(staging, target)
            except OSError:
                if aside is not None and not target.exists():
                    os.replace(aside, target)
                    aside = None
                if not finished():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)


def _moved_aside(target: Path) -> Path | None:
    """Rename the folder ``target`` to a staging name beside it and return that name; None when another process
    moved it first."""
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".old", dir=target.parent))
    try:
        os.replace(target, aside)
    except FileNotFoundError:
        aside.rmdir()
        return None
    return aside
