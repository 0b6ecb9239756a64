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
from typing import Iterator, Sequence

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


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[str]:
  """The name to write `path` (local or an object-store URL) through: a temporary local name
  renamed into place (`atomic_path`), or on an object store the object itself."""
  if "://" in os.fspath(path):
    yield os.fspath(path)
    return
  with atomic_path(path) as tmp:
    yield tmp


@contextlib.contextmanager
def staged_files(out_dir: str | os.PathLike, first: Sequence[str] = ()) -> Iterator[str]:
  """Yields a temporary directory inside local `out_dir`; when the body succeeds, every file
  it wrote is renamed into `out_dir` one by one (those in `first` first, then by name), so an
  interrupted write leaves each file whole or absent. Other files of `out_dir` stay."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix=".staged-", dir=out_dir) as tmp:
    yield tmp
    names = [n for n in first if os.path.exists(os.path.join(tmp, n))]
    for name in names + sorted(set(os.listdir(tmp)) - set(names)):
      make_ordinary(os.path.join(tmp, name))
      os.replace(os.path.join(tmp, name), out_dir / name)


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
  """Writes `data` to a local path or an object-store URL (any etils.epath path)."""
  with atomic_target(path) as target, epath.Path(target).open(
      "w" if isinstance(data, str) else "wb") as f:
    f.write(data)
