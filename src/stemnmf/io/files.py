"""File helpers: atomic outputs and input checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from stemnmf.errors import InputError, ResultsError

__all__ = ["atomic_output", "file_checksum", "split_input_path", "FULL_CHECKSUM_LIMIT"]

#: Suffixes of files that may name a dataset inside them as ``FILE:/group/dataset``.
CONTAINER_SUFFIXES = (".h5", ".hdf5", ".hdf", ".emd", ".hspy")


def split_input_path(path: str | os.PathLike) -> tuple[Path, str | None]:
    """``'file.h5:/group/data'`` -> ``(Path('file.h5'), '/group/data')``; other paths -> ``(Path(path), None)``.

    The one place a path with a dataset inside it is taken apart (a ``~`` is expanded).
    """
    text = os.fspath(path)
    lower = text.lower()
    for ext in CONTAINER_SUFFIXES:
        i = lower.find(ext + ":")
        if i >= 0:
            cut = i + len(ext)
            return Path(text[:cut]).expanduser(), text[cut + 1 :] or None
    return Path(text).expanduser(), None

#: Files up to this size are hashed whole; larger ones by a sample of blocks.
FULL_CHECKSUM_LIMIT = 2 * 1024**3
_SAMPLE_BLOCKS = 64
_BLOCK = 1024**2


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False):
    """Write a file under a temporary name and rename it when complete.

    Yields the temporary path to write. If the block raises (or the process
    is interrupted), the temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path : path-like
        The final file name.
    overwrite : bool, default False
        Replace an existing file; otherwise an existing file is an error.

    Raises
    ------
    ResultsError
        If ``path`` exists and ``overwrite`` is False, or its folder is missing.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ResultsError(f"{path} already exists", "choose another name or pass --overwrite")
    if not path.parent.is_dir():
        raise ResultsError(f"folder {path.parent} does not exist", "create it first")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _hash_file(digest, path: Path, sampled: bool) -> None:
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as fh:
        if not sampled:
            for block in iter(lambda: fh.read(_BLOCK * 8), b""):
                digest.update(block)
            return
        step = max(_BLOCK, size // _SAMPLE_BLOCKS)
        for offset in range(0, size, step):
            fh.seek(offset)
            digest.update(fh.read(_BLOCK))
        fh.seek(max(0, size - _BLOCK))
        digest.update(fh.read(_BLOCK))


def file_checksum(path: str | os.PathLike, *, full_limit: int = FULL_CHECKSUM_LIMIT) -> str:
    """SHA-256 of an input file or folder, as ``'sha256:<hex>'``.

    Files (or folders) larger than ``full_limit`` bytes are hashed from their
    size and 64 evenly spaced 1 MiB blocks plus the last block, returned as
    ``'sha256-sampled:<hex>'``; this detects a different or changed file
    without reading 100 GB. A folder is hashed over its files in sorted order,
    names included. A ``file.h5:/dataset`` suffix is ignored.
    """
    path, _ = split_input_path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the path")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    total = sum(p.stat().st_size for p in files)
    sampled = total > full_limit
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        _hash_file(digest, file, sampled)
    return ("sha256-sampled:" if sampled else "sha256:") + digest.hexdigest()
