"""Writes that never leave a half-written file under its final name: the body writes to a
temporary name in the destination folder, which is renamed into place only when it succeeds.
Object stores (gs://, s3://) write whole objects, so there the write goes straight to the path.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from etils import epath


def umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def make_ordinary(path: str | os.PathLike) -> None:
  """mkstemp / mkdtemp make owner-only entries; results are ordinary files (umask applies)."""
  os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
  """Yields a temporary file path next to local `path`; renames it onto `path` only if the
  body succeeds (several writers, e.g. hosts sharing a work dir, get distinct names)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
  os.close(fd)
  try:
    yield tmp
    make_ordinary(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(directory: str | os.PathLike) -> Iterator[str]:
  """Yields a temporary local directory that replaces `directory` (and whatever it held) only
  if the body succeeds."""
  directory = os.path.abspath(directory)
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.", dir=parent)
  try:
    yield tmp
    make_ordinary(tmp)
    if os.path.exists(directory):
      shutil.rmtree(directory)
    os.rename(tmp, directory)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
  """Writes `data` to a local path or an object-store URL (any etils.epath path)."""
  mode = "w" if isinstance(data, str) else "wb"
  if "://" in os.fspath(path):
    with epath.Path(path).open(mode) as f:
      f.write(data)
    return
  with atomic_path(path) as tmp, open(tmp, mode) as f:
    f.write(data)
