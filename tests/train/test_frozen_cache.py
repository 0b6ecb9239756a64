"""The frozen image tower's table at data-set scale (clipjax/data/embedding_table.py): parts
written atomically and read back by id; two hosts embed disjoint parts and read the same
table the single-host build writes; an interrupted build embeds only its missing parts."""
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import portpicker
import pytest
from conftest import FLOAT32_ROUNDING, REPO, rel_err
from etils import epath

import clipjax
from clipjax.data.embedding_table import (
  EmbeddingTable,
  finish_table,
  plan_parts,
  start_table,
  write_part,
)
from clipjax.data.synthetic import SyntheticScenes
from clipjax.data.views import CachedInputs
from clipjax.evaluate.embed import clip_encoders
from clipjax.train.frozen_cache import build_image_cache

SPEC = {"kind": "synthetic", "size": 64, "resolution": 32, "seed": 0}


def test_table_parts_round_trip_by_id(tmp_path):
  rng = np.random.default_rng(0)
  ids = np.sort(rng.choice(10_000, size=50, replace=False)).astype(np.int64)
  rows = rng.normal(size=(50, 8)).astype(np.float32)
  parts = plan_parts(len(ids), 16)
  assert parts == [(0, 16), (16, 32), (32, 48), (48, 50)]
  directory = epath.Path(tmp_path / "t")
  start_table(directory, 8, len(parts), 16)
  with pytest.raises(FileNotFoundError, match=r"parts \[0, 1, 2, 3\] are not written"):
    finish_table(directory)
  for p, (lo, hi) in reversed(list(enumerate(parts))):  # any order; rows shuffled in a part
    keep = np.arange(lo, hi) if p != 1 else np.arange(lo, hi)[::2]  # part 1: half unreadable
    perm = rng.permutation(keep)
    write_part(directory, p, ids[perm], rows[perm])
  finish_table(directory)
  assert not list(directory.glob(".*tmp"))  # nothing half-written left behind
  table = pickle.loads(pickle.dumps(EmbeddingTable(directory)))  # as a grain worker gets it
  good = np.concatenate([np.arange(0, 16), np.arange(16, 32, 2), np.arange(32, 50)])
  assert len(table) == len(good) and np.array_equal(table.ids, ids[good])
  query = rng.permutation(good)
  np.testing.assert_array_equal(table.lookup(ids[query]), rows[query])  # bitwise
  assert int(ids[17]) not in table and int(ids[18]) in table
  assert table.get(int(ids[17])) is None
  np.testing.assert_array_equal(table.get(int(ids[18])), rows[18])
  with pytest.raises(KeyError, match=rf"\[{ids[17]}\] are not in the frozen-tower cache"):
    table.lookup([ids[18], ids[17]])
  with pytest.raises(ValueError, match="describes another table"):
    start_table(directory, 8, len(parts), 32)


def _reference_rows(model, params, source):
  """Each scene through the image tower directly, L2-normalised (what the cache stores)."""
  encoders = clip_encoders(model, params, 8)
  from clipjax.evaluate.embed import embed_images
  out = embed_images(encoders, source, batch_size=8, num_workers=0)
  assert np.array_equal(out["index"], np.arange(len(source)))
  return out["embeddings"]


def test_an_interrupted_build_embeds_only_its_missing_parts(tmp_path, caplog):
  model, params = clipjax.create_model("ViT-T-16-test")
  source = SyntheticScenes(64, resolution=32, seed=0)
  workdir = epath.Path(tmp_path)
  table = build_image_cache(model, params, source, SPEC, workdir, num_workers=0, batch_size=8,
                            part_size=16)
  reference = _reference_rows(model, params, source)
  assert rel_err(table.lookup(np.arange(64)), reference) < FLOAT32_ROUNDING
  directory = table.directory
  stamps = {p.name: p.stat().mtime for p in directory.glob("part-*")}
  # a run stopped while caching: part 2 and the joined index never written
  for name in ("part-00002.array_record", "part-00002.ids.npy", "ids.npy", "offsets.npy"):
    (directory / name).unlink()
  caplog.set_level("INFO")
  again = build_image_cache(model, params, source, SPEC, workdir, num_workers=0, batch_size=8,
                            part_size=16)
  assert "host 0 embedded 1 of 4 parts (16 images)" in caplog.text
  for p in directory.glob("part-*"):
    if not p.name.startswith("part-00002"):
      assert p.stat().mtime == stamps[p.name], p.name  # untouched
  np.testing.assert_array_equal(again.lookup(np.arange(64)), table.lookup(np.arange(64)))
  # the training view reads rows in the worker: record -> image_embedding, no pixels
  record = CachedInputs(source, again)[5]
  assert "image" not in record and record["image_id"] == 5
  np.testing.assert_array_equal(record["image_embedding"], again.lookup([5])[0])


def test_two_hosts_embed_disjoint_parts_of_one_table(tmp_path):
  port = portpicker.pick_unused_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=str(REPO), JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
  procs = [subprocess.Popen([sys.executable, str(REPO / "tests/train/frozen_cache_worker.py"),
                             str(port), str(i), str(tmp_path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  errs = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=300)
      assert p.returncode == 0 and "DONE 64" in out, err[-3000:]
      errs.append(err)
  finally:
    for p in procs:
      p.kill()
  # each host embedded its share only: parts 0, 2 on host 0 and 1, 3 on host 1
  for host, err in enumerate(errs):
    assert re.search(rf"host {host} embedded 2 of 4 parts \(32 images\)", err), err[-2000:]
  model, params = clipjax.create_model("ViT-T-16-test")
  reference = _reference_rows(model, params, SyntheticScenes(64, resolution=32, seed=0))
  rows = [np.load(tmp_path / f"rows-{i}.npy") for i in range(2)]
  np.testing.assert_array_equal(rows[0], rows[1])  # both hosts read the same table
  assert rel_err(rows[0], reference) < FLOAT32_ROUNDING
