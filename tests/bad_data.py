"""Files a user might have, good and bad, shared by the data and CLI tests."""
import io
import json
import struct
import tarfile
import zlib

import numpy as np
from PIL import Image


def jpeg(seed: int, size=(40, 30)) -> bytes:
  rng = np.random.default_rng(seed)
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(buf, "JPEG")
  return buf.getvalue()


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
  """A PNG whose header claims width x height pixels (a few bytes of data)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
          + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def write_tar(path, members: dict[str, bytes]) -> None:
  with tarfile.open(path, "w") as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


# One manifest line of each kind of bad record, for a folder made by `write_bad_images`:
# (line, reason, what the record's detail must name).
BAD_LINES = [
    (json.dumps({"image": "bomb.png", "caption": "a bomb"}).encode(), "too_large", "bomb.png"),
    (b'{"image": "good0.jpg", "caption": "caf\xe9 au lait"}', "bad_encoding", "UTF-8"),
    (json.dumps({"image": "good0.jpg", "caption": 123}).encode(), "bad_field", "caption"),
    (json.dumps(["good0.jpg", "an array"]).encode(), "bad_json", "expected an object"),
    (json.dumps({"caption": "no image key"}).encode(), "missing_field", "no image"),
    (json.dumps({"image": "good0.jpg", "caption": "x", "label": "cat"}).encode(), "bad_field",
     "label 'cat' is not an integer"),
    (json.dumps({"image": "corrupt.jpg", "caption": "garbage"}).encode(), "corrupt_image",
     "corrupt.jpg"),
    (json.dumps({"image": "missing.jpg", "caption": "gone"}).encode(), "missing_file",
     "missing.jpg"),
    (json.dumps({"image": "good1.jpg", "caption": "  "}).encode(), "empty_caption", "caption"),
    (json.dumps({"image": "good2.jpg", "caption": "again", "image_id": 1}).encode(),
     "duplicate_id", "image_id 1"),
    (b"{not json", "bad_json", "Expecting property name"),
]


def write_bad_images(folder) -> None:
  """good0..2.jpg, a decompression bomb and a corrupt file: what BAD_LINES point at."""
  for k in range(3):
    (folder / f"good{k}.jpg").write_bytes(jpeg(k))
  (folder / "bomb.png").write_bytes(png_bomb())
  (folder / "corrupt.jpg").write_bytes(b"this is not a jpeg")


def bad_shard_members(good: dict[str, bytes]) -> dict[str, bytes]:
  """`good` (key.jpg / key.txt members) plus one sample of each bad kind a tar shard can
  hold: an undecodable image, no caption, a caption that is not UTF-8, JSON metadata that is
  not an object, a decompression bomb."""
  return {**good, "bad_image.jpg": b"this is not a jpeg", "bad_image.txt": b"corrupt",
          "no_caption.jpg": jpeg(1), "bad_text.jpg": jpeg(2), "bad_text.txt": b"caf\xe9",
          "bad_meta.jpg": jpeg(3), "bad_meta.json": b"[1, 2]",
          "bomb.png": png_bomb(), "bomb.txt": b"a bomb"}
