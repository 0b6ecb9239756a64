"""grain pipelines with real worker processes: every source, bad records, resume, sharding."""
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from clipjax.data.pipeline import PrepareExample, build_dataset
from clipjax.data.records import BAD_REASONS
from clipjax.data.manifest import ManifestSource
from clipjax.data.shards import WebDatasetSource
from clipjax.data.sources import CocoCaptionsSource
from clipjax.data.synthetic import SyntheticScenes
from clipjax.data.transforms import image_transform, normalize
from clipjax.data.views import OneQAPerSample


def _jpeg(rng, size=(40, 30)) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(buf, "JPEG")
  return buf.getvalue()


def _batches(ds, n):
  it = iter(ds)
  try:
    return [next(it) for _ in range(n)]
  finally:
    it.close()


@pytest.fixture
def messy_manifest(tmp_path):
  """8 good records and one of each kind of bad record."""
  rng = np.random.default_rng(0)
  lines = []
  for k in range(8):
    (tmp_path / f"good{k}.jpg").write_bytes(_jpeg(rng))
    lines.append(json.dumps({"image": f"good{k}.jpg", "caption": f"picture number {k}", "label": k}))
  (tmp_path / "corrupt.jpg").write_bytes(b"this is not a jpeg")
  (tmp_path / "truncated.jpg").write_bytes(_jpeg(rng, (200, 200))[:300])
  lines += [json.dumps({"image": "missing.jpg", "caption": "gone"}),
            json.dumps({"image": "corrupt.jpg", "caption": "garbage"}),
            json.dumps({"image": "truncated.jpg", "caption": "cut short"}),
            json.dumps({"image": "good0.jpg", "caption": "   "}),
            '{"image": "good1.jpg", "caption": "unterminated']
  manifest = tmp_path / "manifest.jsonl"
  manifest.write_text("\n".join(lines) + "\n")
  return manifest


def test_bad_records_are_skipped_and_counted(messy_manifest):
  ds = build_dataset(ManifestSource(str(messy_manifest)), PrepareExample(32, train=False),
                     batch_size=4, shuffle=False, num_epochs=1, num_workers=2,
                     process_index=0, process_count=1)
  batches = list(ds)  # finite: every worker ends with an all-masked batch carrying its counts
  counts = {r: n for r, n in zip(BAD_REASONS, sum(b["bad_records"] for b in batches)) if n}
  assert counts == {"missing_file": 1, "corrupt_image": 2, "empty_caption": 1, "bad_json": 1}
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  assert sorted(labels.tolist()) == list(range(8))


def test_dropped_remainder_is_counted(tmp_path):
  source = SyntheticScenes(10, 32)
  ds = build_dataset(source, PrepareExample(32, False), batch_size=4, shuffle=False,
                     num_epochs=1, num_workers=0, process_index=0, process_count=1)
  batches = list(ds)
  assert [int(b["mask"].sum()) for b in batches] == [4, 4, 0]
  assert batches[-1]["bad_records"][BAD_REASONS.index("remainder")] == 2


def test_strict_mode_fails_naming_the_record(messy_manifest):
  prepare = PrepareExample(32, train=False, strict=True)
  source = ManifestSource(str(messy_manifest))
  with pytest.raises(ValueError, match=r"bad record \(missing_file\): .*missing\.jpg"):
    prepare(source[8])
  with pytest.raises(ValueError, match=r"bad record \(bad_json\): .*manifest\.jsonl:13"):
    prepare(source[12])


def test_csv_manifest_and_eval_padding(tmp_path):
  rng = np.random.default_rng(1)
  rows = ["image,caption,label,dialogue"]
  for k in range(5):
    (tmp_path / f"{k}.png").write_bytes(_jpeg(rng))
    rows.append(f'{k}.png,caption {k},{k},"[[""what?"", ""thing {k}""]]"')
  (tmp_path / "m.csv").write_text("\n".join(rows))
  source = ManifestSource(str(tmp_path / "m.csv"))
  assert source[2]["dialogue"] == [["what?", "thing 2"]]
  ds = build_dataset(source, PrepareExample(32, False, ("caption", "dialogue")), batch_size=4,
                     shuffle=False, num_epochs=1, num_workers=0, pad_remainder=True,
                     process_index=0, process_count=1)
  first, second = _batches(ds, 2)
  assert first["mask"].all() and second["mask"].tolist() == [True, False, False, False]
  assert second["image"][1:].sum() == 0 and second["dialogue"].shape == (4, 77)


def test_coco_captions_on_the_real_sample(coco_sample):
  source = CocoCaptionsSource(str(coco_sample / "captions_coco_format.json"),
                              str(coco_sample / "images"))
  assert len(source) == 145 and len(source.image_ids) == 29
  prepare = PrepareExample(224, train=False)
  ds = build_dataset(source, prepare, batch_size=29, shuffle=False, num_epochs=1, num_workers=2,
                     pad_remainder=True, process_index=0, process_count=1)
  batches = list(ds)
  ids = np.concatenate([b["image_id"][b["mask"]] for b in batches])
  assert len(ids) == 145 and sorted(np.unique(ids).tolist()) == source.image_ids
  record = source[0]
  expected = image_transform(224)(Image.open(record["image"]))
  assert batches[0]["image"].dtype == np.uint8  # normalised later, on the device
  np.testing.assert_array_equal(normalize(batches[0]["image"][0]), expected)
  assert not sum(b["bad_records"] for b in batches).any()


def test_webdataset_shards_read_in_memory(tmp_path):
  rng = np.random.default_rng(2)
  images = {}
  for shard in range(2):
    with tarfile.open(tmp_path / f"shard-{shard:05d}.tar", "w") as tar:
      for k in range(3):
        key = f"{shard:05d}{k:04d}"
        images[key] = _jpeg(rng)
        members = {f"{key}.jpg": images[key], f"{key}.txt": f"caption {key}".encode(),
                   f"{key}.json": json.dumps({"label": k}).encode()}
        # a hostile member name: read by offset, never extracted, so it cannot escape
        members[f"../../escape{key}.txt"] = b"x"
        for name, data in members.items():
          info = tarfile.TarInfo(name)
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
  source = WebDatasetSource([str(tmp_path / f"shard-{s:05d}.tar") for s in range(2)])
  records = [r for r in (source[i] for i in range(len(source))) if isinstance(r, dict)]
  assert len(records) == 6
  for r in records:
    key = r["caption"].split()[-1]
    assert r["image"] == images[key] and r["label"] == int(key[-1])
  assert not list(tmp_path.parent.glob("escape*"))


def test_exact_resume_mid_epoch_with_workers():
  source = OneQAPerSample(SyntheticScenes(60, 32))
  make = lambda: build_dataset(source, PrepareExample(32, True, ("caption", "dialogue")),
                               batch_size=8, seed=3, num_workers=2, process_index=0,
                               process_count=1)
  it = iter(make())
  try:
    for _ in range(5):  # crosses the 180-sample epoch boundary later on
      next(it)
    state = it.get_state()
    json.dumps(state)  # the state is plain data, storable in a checkpoint
    want = [next(it) for _ in range(25)]
  finally:
    it.close()
  restored = iter(make())
  try:
    restored.set_state(state)
    got = [next(restored) for _ in range(25)]
  finally:
    restored.close()
  for a, b in zip(want, got):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_hosts_get_disjoint_shards_covering_the_data():
  source = SyntheticScenes(48, 32)
  seen = []
  for host in range(2):
    ds = build_dataset(source, PrepareExample(32, False), batch_size=8, seed=0, num_epochs=1,
                       num_workers=0, process_index=host, process_count=2)
    seen.append(np.concatenate([b["image_id"] for b in _batches(ds, 3)]).tolist())
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(48))


def test_one_qa_triples_the_dataset():
  source = OneQAPerSample(SyntheticScenes(4, 32), pairs=3)
  assert len(source) == 12
  assert [source[i]["dialogue"][0] for i in range(3)] == [tuple(q) for q in SyntheticScenes(4, 32)[0]["dialogue"]]


def test_unicl_mix_is_balanced_with_unique_text_labels():
  from clipjax.data.mixing import balanced_unicl_source
  from clipjax.data.synthetic import CLASS_NAMES
  labelled, captioned = SyntheticScenes(30, 32, seed=1), SyntheticScenes(50, 32, seed=2)
  mixed = balanced_unicl_source(labelled, CLASS_NAMES, captioned)
  records = [mixed[i] for i in range(len(mixed))]
  prompts = [r for r in records if r["label"] < len(CLASS_NAMES)]
  pairs = [r for r in records if r["label"] >= len(CLASS_NAMES)]
  assert len(records) == 100 and len(prompts) == len(pairs) == 50
  assert all(r["caption"] == f"a photo of a {CLASS_NAMES[r['label']]}." for r in prompts)
  assert len({r["label"] for r in pairs}) == 50  # every image-text pair its own class
  ds = build_dataset(mixed, PrepareExample(32, True), batch_size=10, num_workers=0,
                     process_index=0, process_count=1)
  batch = _batches(ds, 1)[0]
  assert batch["label"].shape == (10,) and batch["mask"].all()


def test_global_batches_are_sharded_over_the_mesh():
  import jax

  from clipjax.data.pipeline import global_batches
  from clipjax.parallel.mesh import batch_sharding, make_mesh
  mesh = make_mesh()
  ds = build_dataset(SyntheticScenes(64, 32), PrepareExample(32, False), batch_size=16,
                     shuffle=False, num_epochs=1, num_workers=0, process_index=0, process_count=1)
  out = list(global_batches(iter(ds), mesh))
  assert len(out) == 4
  assert out[0]["image"].sharding == batch_sharding(mesh) and out[0]["image"].shape == (16, 32, 32, 3)
  assert sorted(np.concatenate([np.asarray(b["image_id"]) for b in out]).tolist()) == list(range(64))
  assert isinstance(out[0]["caption"], jax.Array)


def test_array_record_round_trip_and_cli(tmp_path, messy_manifest):
  import subprocess
  import sys

  from conftest import REPO

  from clipjax.data.array_record import ArrayRecordSource, write_array_record
  scenes = SyntheticScenes(12, 32)
  paths, skipped = write_array_record(scenes, str(tmp_path / "s-{shard:05d}.array_record"), 3)
  source = ArrayRecordSource(paths)
  assert len(source) == 12 and not skipped
  back = sorted((source[i] for i in range(12)), key=lambda r: r["image_id"])
  for i, r in enumerate(back):
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r["image"]))), scenes[i]["image"])
    assert r["caption"] == scenes[i]["caption"] and r["dialogue"] == [list(q) for q in scenes[i]["dialogue"]]
  ds = build_dataset(source, PrepareExample(32, False, ("caption", "dialogue")), batch_size=4,
                     shuffle=False, num_epochs=1, num_workers=0, process_index=0, process_count=1)
  assert sum(int(b["mask"].sum()) for b in ds) == 12
  out = subprocess.run([sys.executable, str(REPO / "scripts/convert_to_array_record.py"),
                        "--source=manifest", f"--input={messy_manifest}",
                        f"--output={tmp_path / 'm-{shard}.array_record'}"],
                       capture_output=True, text=True, timeout=300, check=True)
  # the converter skips what it can detect (bad JSON line, missing file); corrupt images and the
  # empty caption are stored as they are and counted by the pipeline when read
  assert "'bad_json': 1" in out.stdout and "'missing_file': 1" in out.stdout
  assert len(ArrayRecordSource([str(tmp_path / "m-0.array_record")])) == 11


def test_text_triplets_and_two_independent_streams():
  from clipjax.data.pipeline import PrepareText, TwoStreams, synthetic_text_records
  scenes = SyntheticScenes(40, 32)

  def streams():
    texts = build_dataset(synthetic_text_records(scenes), PrepareText(num_negatives=1),
                          batch_size=16, num_workers=0, process_index=0, process_count=1)
    images = build_dataset(scenes, PrepareExample(32, True), batch_size=4, num_workers=0,
                           process_index=0, process_count=1)
    return iter(TwoStreams(texts, images))

  it = streams()
  step = next(it)
  assert step["text"]["query"].shape == (16, 77) and step["text"]["negatives"].shape == (16, 1, 77)
  assert step["image_text"]["image"].shape == (4, 32, 32, 3)
  assert step["bad_records"].shape == (len(BAD_REASONS),)
  assert not np.array_equal(step["text"]["positive"], step["text"]["negatives"][:, 0])
  # resume: both positions are in the state (the streams advance at different rates)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  resumed = streams()
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for stream in ("text", "image_text"):
      for k in want[stream]:
        np.testing.assert_array_equal(got[stream][k], want[stream][k])


def _tiny_tfds(data_dir):
  """A TFDS dataset built locally in array_record format (raw-tensor images: encoding Image
  features needs TensorFlow, which the project does not install)."""
  import tensorflow_datasets as tfds

  class TinyScenes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(40, 40, 3), dtype=np.uint8),
          "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
          "caption": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(9):
        yield i, {"image": np.full((40, 40, 3), 20 * i, np.uint8), "label": i % 3,
                  "caption": f"scene number {i}"}

  TinyScenes(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_tfds_source_reads_local_array_record_and_never_downloads(tmp_path):
  from clipjax.data.sources import TfdsSource
  _tiny_tfds(tmp_path)
  source = TfdsSource("tiny_scenes", "train", str(tmp_path), caption_key="caption")
  assert len(source) == 9 and source.class_names == ["red", "green", "blue"]
  records = [source[i] for i in range(9)]
  for r in records:
    k = int(r["caption"].split()[-1])
    assert r["label"] == k % 3 and int(r["image"][0, 0, 0]) == 20 * k
  ds = build_dataset(source, PrepareExample(32, False), batch_size=3, shuffle=False, num_epochs=1,
                     num_workers=0, process_index=0, process_count=1)
  assert sum(int(b["mask"].sum()) for b in ds) == 9
  with pytest.raises(FileNotFoundError, match=r"not prepared in .*tfds build cifar10"):
    TfdsSource("cifar10", "test", str(tmp_path / "empty"))


@pytest.fixture
def gcs_bucket(monkeypatch):
  """A local Cloud Storage emulator (gcp-storage-emulator) that gcsfs, and so etils.epath's
  gs:// backend, talks to through STORAGE_EMULATOR_HOST; grain's spawned workers inherit it."""
  emulator = pytest.importorskip("gcp_storage_emulator.server", reason="gcp-storage-emulator "
                                 "is a test extra")
  pytest.importorskip("gcsfs", reason="gcsfs is a test extra")
  import portpicker
  port = portpicker.pick_unused_port()
  server = emulator.create_server("localhost", port, in_memory=True, default_bucket="clipjax")
  server.start()
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://localhost:{port}")
  try:
    yield "gs://clipjax"
  finally:
    server.stop()


def test_gcs_manifest_reads_like_the_local_copy(messy_manifest, gcs_bucket):
  """The same messy manifest and images under gs://: the same records, pixels and bad-record
  counts as from local disk, through grain worker processes."""
  from etils import epath
  remote = epath.Path(gcs_bucket) / "data"
  for path in messy_manifest.parent.iterdir():
    (remote / path.name).write_bytes(path.read_bytes())

  def read(manifest):
    ds = build_dataset(ManifestSource(str(manifest)), PrepareExample(32, train=False),
                       batch_size=4, shuffle=False, num_epochs=1, num_workers=1,
                       process_index=0, process_count=1)
    return list(ds)

  local, cloud = read(messy_manifest), read(remote / "manifest.jsonl")
  assert len(cloud) == len(local)
  for a, b in zip(cloud, local):
    assert a.keys() == b.keys()
    for k in a:
      if k == "bad_examples":  # the same records named, each by its own location
        assert [r for r, _ in a[k]] == [r for r, _ in b[k]]
        assert all(d.startswith("gs://clipjax/data/manifest.jsonl:") for _, d in a[k])
      else:
        np.testing.assert_array_equal(a[k], b[k])
  assert sum(b["bad_records"] for b in cloud)[BAD_REASONS.index("missing_file")] == 1
