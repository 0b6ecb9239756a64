"""TensorBoard event files, written directly.

An event file is a TFRecord stream of `Event` protocol buffers; scalars need only four message
fields, so they are encoded here by hand. This replaces tensorboardX, which imports torch
whenever torch is installed (seconds per training process) for the one call we make.

TFRecord framing: uint64 length, uint32 masked CRC-32C of the length, the bytes, uint32 masked
CRC-32C of the bytes (all little-endian). Field numbers are those of tensorboard's
`event.proto` / `summary.proto`: Event{wall_time=1 (double), step=2 (int64),
file_version=3 (string), summary=5}, Summary{value=1 (repeated)}, Summary.Value{tag=1,
simple_value=2 (float)}.
"""
from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from typing import Iterator

from etils import epath

from clipjax.files import write_atomically


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):  # the Castagnoli polynomial, bit-reversed
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC_TABLE = _crc32c_table()
_WRITERS = itertools.count()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  n &= (1 << 64) - 1  # int64 fields: negatives as two's complement, like protobuf
  while True:
    low, n = n & 0x7F, n >> 7
    out.append(low | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field (wire type 2)."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, body: bytes) -> bytes:
  return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + body


def _record(data: bytes) -> bytes:
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", _masked_crc(length)) + data
          + struct.pack("<I", _masked_crc(data)))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = data[pos]
    value |= (byte & 0x7F) << shift
    pos, shift = pos + 1, shift + 7
    if not byte & 0x80:
      return value, pos


def event_step(event: bytes) -> int:
  """The `step` field of an encoded Event (0 when absent, as protobuf reads it)."""
  pos = 0
  while pos < len(event):
    key, pos = _read_varint(event, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _read_varint(event, pos)
      if number == 2:
        return value - (1 << 64) if value >> 63 else value
    elif wire == 1:
      pos += 8
    elif wire == 2:
      length, pos = _read_varint(event, pos)
      pos += length
    elif wire == 5:
      pos += 4
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")
  return 0


def _records(data: bytes) -> Iterator[tuple[bytes, bytes]]:
  """(framed record, payload) of each whole record; a record cut short (a killed writer) ends
  the stream."""
  pos = 0
  while pos + 12 <= len(data):
    (length,) = struct.unpack_from("<Q", data, pos)
    end = pos + 12 + length + 4
    if end > len(data):
      return
    yield data[pos:end], data[pos + 12:pos + 12 + length]
    pos = end


def truncate_events(logdir: str | os.PathLike, step: int) -> None:
  """Rewrites the event files of `logdir` without the scalars logged after `step` (and
  without a last record cut short), so that a run resumed from the checkpoint at `step` logs
  each later step once. Files with nothing to drop are left as they are."""
  for path in epath.Path(logdir).glob("events.out.tfevents.*"):
    data = path.read_bytes()
    kept = [framed for framed, event in _records(data) if event_step(event) <= step]
    if sum(map(len, kept)) != len(data):
      write_atomically(path, b"".join(kept))


class EventWriter:
  """Appends scalar summaries to a new event file in `logdir` (one file per writer, as
  TensorBoard expects: a resumed run adds a file next to the old one)."""

  def __init__(self, logdir: str | os.PathLike):
    logdir = epath.Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    # TensorBoard reads a directory's files in name order; the counter keeps two writers of one
    # process within one second apart.
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
            f".{next(_WRITERS):04d}")
    self.path = logdir / name
    self._file = self.path.open("wb")
    self._file.write(_record(_event(time.time(), 0, _field(3, b"brain.Event:2"))))
    self._file.flush()

  def scalars(self, step: int, values: dict[str, float]) -> None:
    """One event holding every `tag: value` of this step (float32, as TensorBoard stores)."""
    summary = b"".join(
        _field(1, _field(1, tag.encode()) + b"\x15" + struct.pack("<f", float(value)))
        for tag, value in values.items())
    self._file.write(_record(_event(time.time(), step, _field(5, summary))))
    self._file.flush()

  def close(self) -> None:
    self._file.close()
