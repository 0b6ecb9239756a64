"""Users' own files: every kind of bad record is named and counted (never raised), open_clip's
CSV / TSV, image folders, tar shards and parquet as other tools write them, brace specs."""
import json
import os

import numpy as np
import pytest
from bad_data import BAD_LINES, jpeg as _jpeg, png_bomb, write_bad_images, write_tar

from clipjax.data.builder import make_source, parse_source_spec
from clipjax.data.paths import expand_braces, resolve_files
from clipjax.data.pipeline import PrepareExample, build_dataset
from clipjax.data.records import BAD_REASONS, BadRecord
from clipjax.errors import ConfigError


def _prepared(source, **kwargs):
  prepare = PrepareExample(32, train=False, **kwargs)
  return [prepare(source[i]) for i in range(len(source))]


def _bad(results) -> dict[str, str]:
  """reason -> detail of each BadRecord (the test data holds one of each kind)."""
  out = {}
  for r in results:
    if isinstance(r, BadRecord):
      assert r.reason not in out, (r, out)
      out[r.reason] = r.detail
  return out


@pytest.fixture
def bad_manifest(tmp_path):
  """Six good records (image ids 0..5), then one line of each kind of bad record."""
  write_bad_images(tmp_path)
  for k in range(3, 6):
    (tmp_path / f"good{k}.jpg").write_bytes(_jpeg(k))
  good = [json.dumps({"image": f"good{k}.jpg", "caption": f"picture {k}", "image_id": k,
                      "label": k}).encode() for k in range(6)]
  lines = good + [line for line, _, _ in BAD_LINES]
  path = tmp_path / "train.jsonl"
  path.write_bytes(b"\n".join(lines) + b"\n")
  return path


def test_every_bad_line_of_a_manifest_is_a_named_bad_record(bad_manifest):
  results = _prepared(make_source(f"manifest:manifest={bad_manifest}"))
  assert [r["image_id"] for r in results[:6]] == list(range(6))
  for i, (_, reason, needle) in enumerate(BAD_LINES):
    record = results[6 + i]
    assert isinstance(record, BadRecord) and record.reason == reason, (i, record)
    assert record.detail.startswith(f"{bad_manifest}:{7 + i}: "), record.detail
    assert needle in record.detail, record.detail


def test_numeric_caption_and_list_caption_are_bad_fields(tmp_path):
  (tmp_path / "a.jpg").write_bytes(_jpeg(0))
  path = tmp_path / "m.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in [
      {"image": "a.jpg", "caption": 3.5}, {"image": "a.jpg", "caption": ["x", "y"]},
      {"image": "a.jpg", "caption": "ok", "dialogue": "not a list"}]))
  results = _prepared(make_source(f"manifest:manifest={path}"))
  assert [r.reason for r in results] == ["bad_field"] * 3
  assert ["caption is a number" in results[0].detail, "caption is a list" in results[1].detail,
          "dialogue is" in results[2].detail] == [True] * 3


def test_pixel_limit_is_configurable_and_read_from_the_header(tmp_path):
  (tmp_path / "a.jpg").write_bytes(_jpeg(0, (40, 30)))
  path = tmp_path / "m.jsonl"
  path.write_text(json.dumps({"image": "a.jpg", "caption": "small"}))
  source = make_source(f"manifest:manifest={path}")
  assert isinstance(_prepared(source, max_image_pixels=1200)[0], dict)  # 40 x 30 = 1200
  (result,) = _prepared(source, max_image_pixels=1199)
  assert result.reason == "too_large" and "40x30 pixels" in result.detail


def test_bad_records_never_leave_the_pipeline_with_workers(bad_manifest):
  ds = build_dataset(make_source(f"manifest:manifest={bad_manifest}"),
                     PrepareExample(32, train=False), batch_size=3, shuffle=True,
                     num_epochs=1, num_workers=2, process_index=0, process_count=1)
  batches = list(ds)
  ids = sorted(np.concatenate([b["image_id"][b["mask"]] for b in batches]).tolist())
  assert ids == list(range(6))
  counts = {r: int(n) for r, n in zip(BAD_REASONS, sum(b["bad_records"] for b in batches)) if n}
  assert counts == {"too_large": 1, "bad_encoding": 1, "bad_field": 2, "bad_json": 2,
                    "missing_field": 1, "corrupt_image": 1, "missing_file": 1,
                    "empty_caption": 1, "duplicate_id": 1}
  named = [d for b in batches for _, d in b["bad_examples"]]
  assert len(named) == len(BAD_LINES) and all(str(bad_manifest) in d for d in named), named


def test_a_source_that_raises_is_counted_not_fatal():
  class Flaky:
    def __len__(self):
      return 6

    def __getitem__(self, i):
      if i == 3:
        raise OSError("stale file handle")
      return {"image": np.zeros((8, 8, 3), np.uint8), "caption": f"ok {i}", "image_id": i}

  batches = list(build_dataset(Flaky(), PrepareExample(16, train=False), batch_size=5,
                               shuffle=False, num_epochs=1, num_workers=0, process_index=0,
                               process_count=1))
  assert sorted(np.concatenate([b["image_id"][b["mask"]] for b in batches]).tolist()) == [
      0, 1, 2, 4, 5]
  counts = {r: int(n) for r, n in zip(BAD_REASONS, sum(b["bad_records"] for b in batches)) if n}
  assert counts == {"error": 1}
  (detail,) = [d for b in batches for r, d in b["bad_examples"] if r == "error"]
  assert "record 3" in detail and "OSError: stale file handle" in detail


def test_open_clip_tsv_and_comma_csv(tmp_path):
  for k in range(3):
    (tmp_path / f"{k}.jpg").write_bytes(_jpeg(k))
  (tmp_path / "train.tsv").write_text("filepath\ttitle\n" + "".join(
      f"{tmp_path}/{k}.jpg\ta photo, number {k}\n" for k in range(3)))
  (tmp_path / "train.csv").write_text("filepath,title\n" + "".join(
      f'{k}.jpg,"a photo, number {k}"\n' for k in range(3)))
  for spec in (f"csv:file={tmp_path}/train.tsv", f"csv:file={tmp_path}/train.csv"):
    records = _prepared(make_source(spec))
    assert all(isinstance(r, dict) for r in records), records
  source = make_source(f"csv:file={tmp_path}/train.csv")
  assert [source[k]["caption"] for k in range(3)] == [f"a photo, number {k}" for k in range(3)]
  # The same file as a `manifest` (image / caption columns): one clear error, not 3 bad records.
  with pytest.raises(ConfigError, match=r"columns \['filepath', 'title'\]: no caption column "
                                        r"'caption' \(set caption_key"):
    make_source(f"manifest:manifest={tmp_path}/train.csv")
  source = make_source(f"manifest:manifest={tmp_path}/train.csv,img_key=filepath,"
                       f"caption_key=title")
  assert source[1]["caption"] == "a photo, number 1"


def test_csv_row_with_invalid_utf8_is_one_bad_record(tmp_path):
  (tmp_path / "0.jpg").write_bytes(_jpeg(0))
  (tmp_path / "m.tsv").write_bytes(b"filepath\ttitle\n0.jpg\tgood\n0.jpg\tcaf\xe9\n0.jpg\tfine\n"
                                   b"0.jpg\n")
  results = _prepared(make_source(f"csv:file={tmp_path}/m.tsv"))
  assert [type(r).__name__ for r in results] == ["dict", "BadRecord", "dict", "BadRecord"]
  assert results[1].reason == "bad_encoding" and f"{tmp_path}/m.tsv:3" in results[1].detail
  assert results[3].reason == "bad_field" and "1 fields, the header has 2" in results[3].detail


def test_folder_with_sidecar_captions(tmp_path):
  (tmp_path / "00000").mkdir()
  for k in range(3):
    (tmp_path / "00000" / f"{k:09d}.jpg").write_bytes(_jpeg(k))
    if k != 1:
      (tmp_path / "00000" / f"{k:09d}.txt").write_text(f"caption {k}\n")
  (tmp_path / "top.png").write_bytes(_jpeg(9))
  (tmp_path / "top.txt").write_text("top level")
  source = make_source(f"folder:root={tmp_path}")
  assert source.layout == "captions" and len(source) == 4
  results = _prepared(source)
  bad = _bad(results)
  assert set(bad) == {"missing_field"} and "000000001.jpg" in bad["missing_field"]
  assert [source[i]["caption"] for i in (0, 1, 3)] == ["top level", "caption 0", "caption 2"]


def test_folder_of_class_folders_gives_labels_and_class_names(tmp_path):
  for c, name in enumerate(["golden_retriever", "tabby"]):
    (tmp_path / name).mkdir()
    for k in range(2):
      (tmp_path / name / f"{k}.jpg").write_bytes(_jpeg(10 * c + k))
  source = make_source({"kind": "folder", "root": str(tmp_path)})
  assert source.layout == "classes" and source.class_names == ["golden retriever", "tabby"]
  assert [source[i]["label"] for i in range(4)] == [0, 0, 1, 1]
  assert source[2]["caption"] == "a photo of a tabby."
  with pytest.raises(ConfigError, match="layout='pictures' is not one of"):
    make_source(f"folder:root={tmp_path},layout=pictures")


def test_tar_shards_name_bad_samples_by_shard_and_key(tmp_path):
  write_tar(tmp_path / "00000.tar", {"a.jpg": _jpeg(0), "a.txt": b"first",
                                "b.jpg": b"this is not a jpeg", "b.txt": b"corrupt",
                                "c.jpg": _jpeg(1),
                                "d.jpg": _jpeg(2), "d.txt": b"caf\xe9",
                                "e.jpg": _jpeg(3), "e.json": b"[1, 2]"})
  write_tar(tmp_path / "00001.tar", {"f.jpg": _jpeg(4), "f.txt": b"second",
                                "a.jpg": _jpeg(5), "a.txt": b"a again",
                                "g.png": png_bomb(), "g.txt": b"bomb"})
  source = make_source(f"wds:shards={tmp_path}/{{00000..00001}}.tar")
  results = _prepared(source)
  good = sorted(r["image_id"] for r in results if isinstance(r, dict))
  assert len(good) == 2
  bad = {r.detail.split(":")[0] + ":" + r.detail.split(":")[1]: r.reason
         for r in results if isinstance(r, BadRecord)}
  assert bad == {"00000.tar:b": "corrupt_image", "00000.tar:c": "missing_field",
                 "00000.tar:d.txt": "bad_encoding", "00000.tar:e.json": "bad_json",
                 "00001.tar:a": "duplicate_id", "00001.tar:g": "too_large"}, bad
  assert not any("this is not a jpeg" in r.detail for r in results if isinstance(r, BadRecord))
  # Named the same on every read (each epoch's record is one line of bad_records.jsonl).
  (corrupt,) = [i for i, r in enumerate(results)
                if isinstance(r, BadRecord) and r.reason == "corrupt_image"]
  again = PrepareExample(32, train=False)(source[corrupt])
  assert again == results[corrupt] and "the image bytes" in again.detail


def test_parquet_as_datasets_and_img2dataset_write_it(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  images = [{"bytes": _jpeg(k), "path": f"{k}.jpg"} for k in range(5)]
  images[3] = {"bytes": b"not an image", "path": "3.jpg"}
  captions = ["zero", "one", None, "three", "four"]
  table = pa.table({"image": images, "text": captions, "label": [0, 1, 0, 1, 1]})
  features = {"image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"},
              "label": {"names": ["cat", "dog"], "_type": "ClassLabel"}}
  table = table.replace_schema_metadata(
      {"huggingface": json.dumps({"info": {"features": features}})})
  pq.write_table(table.slice(0, 3), tmp_path / "train-00000-of-00002.parquet", row_group_size=2)
  pq.write_table(table.slice(3), tmp_path / "train-00001-of-00002.parquet", row_group_size=2)
  spec = (f"parquet:files={tmp_path}/train-{{00000..00001}}-of-00002.parquet,caption_key=text,"
          f"label_key=label")
  source = make_source(parse_source_spec(spec))
  assert len(source) == 5 and source.class_names == ["cat", "dog"]
  results = _prepared(source)
  assert [r["label"] for r in results if isinstance(r, dict)] == [0, 1, 1]
  assert _bad(results) == {"missing_field": "train-00000-of-00002.parquet:2: no caption in "
                                            "column text",
                           "corrupt_image": results[3].detail}
  assert results[3].detail.startswith("train-00001-of-00002.parquet:0: ")
  # img2dataset's bytes column; a column of paths relative to the parquet file's folder
  pq.write_table(pa.table({"jpg": [_jpeg(8), _jpeg(9)], "caption": ["x", "y"]}),
                 tmp_path / "img2dataset.parquet")
  (tmp_path / "b.jpg").write_bytes(_jpeg(7))
  pq.write_table(pa.table({"image": ["b.jpg"], "caption": ["z"]}), tmp_path / "paths.parquet")
  for spec in (f"parquet:files={tmp_path}/img2dataset.parquet,image_key=jpg",
               f"parquet:files={tmp_path}/paths.parquet"):
    records = _prepared(make_source(spec))
    assert all(isinstance(r, dict) for r in records), records
  with pytest.raises(ConfigError, match=r"has columns \['jpg', 'caption'\]: no \['image'\]"):
    make_source(f"parquet:files={tmp_path}/img2dataset.parquet")


def test_brace_ranges_lists_and_globs(tmp_path):
  assert expand_braces("s/{00008..00011}.tar") == [f"s/{k:05d}.tar" for k in range(8, 12)]
  assert expand_braces("{a,b}/{1..2}") == ["a/1", "a/2", "b/1", "b/2"]
  assert expand_braces("x{,.gz}") == ["x", "x.gz"] and expand_braces("{x}") == ["{x}"]
  for k in range(3):
    (tmp_path / f"p-{k}.tar").write_bytes(b"")
  assert resolve_files(f"{tmp_path}/p-{{0..1}}.tar", "shards") == [
      f"{tmp_path}/p-0.tar", f"{tmp_path}/p-1.tar"]
  assert len(resolve_files(f"{tmp_path}/p-*.tar", "shards")) == 3
  with pytest.raises(ConfigError, match=r"shards=.*p-\{0\.\.5\}\.tar: 3 of the files it names "
                                        r"do not exist \(.*p-3\.tar"):
    resolve_files(f"{tmp_path}/p-{{0..5}}.tar", "shards")
  with pytest.raises(ConfigError, match=r"shards=.*q-\{0\.\.1\}\.tar matches no files"):
    resolve_files(f"{tmp_path}/q-{{0..1}}.tar", "shards")
  spec = parse_source_spec(f"wds:shards={tmp_path}/{{a,b}}.tar")  # the comma stays in braces
  assert spec == {"kind": "wds", "shards": f"{tmp_path}/{{a,b}}.tar"}
  with pytest.raises(ConfigError, match=r"manifest=.*\{a,b\}\.jsonl names 2 paths; it takes one"):
    make_source(f"manifest:manifest={tmp_path}/{{a,b}}.jsonl")


def test_home_and_variables_in_source_paths(tmp_path, monkeypatch):
  (tmp_path / "a.jpg").write_bytes(_jpeg(0))
  (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.jpg", "caption": "home"}))
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.setenv("CLIPJAX_TEST_DATA", str(tmp_path))
  for spec in ("manifest:manifest=~/m.jsonl", "manifest:manifest=$CLIPJAX_TEST_DATA/m.jsonl"):
    source = make_source(spec)
    assert source[0]["image"] == os.path.join(tmp_path, "a.jpg")
