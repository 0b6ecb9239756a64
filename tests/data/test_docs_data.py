"""Every command in docs/data.md as a user copies it: its config fields exist, and its source
spec loads the small files this test writes at the documented paths (a record of each kind is
prepared; tfds and vqav1 specs are checked for their fields and paths)."""
import ast
import importlib.util
import json
import shlex
import shutil

import numpy as np
from bad_data import jpeg, write_tar
from conftest import REPO

from clipjax.cli import rewrite_source_specs
from clipjax.data.builder import check_source_spec, make_source
from clipjax.data.pipeline import PrepareExample


def _commands() -> list[list[str]]:
  text = (REPO / "docs/data.md").read_text()
  block = text.split("One command per kind", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
  return [shlex.split(l) for l in block.splitlines() if l.startswith("python -m clipjax.")]


def _write_documented_files(root) -> None:
  """What the documented specs point at, under `root` (the test's working directory)."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  data = root / "data"
  (data / "images").mkdir(parents=True)
  (data / "images/cat.jpg").write_bytes(jpeg(0))
  (data / "train.jsonl").write_text(json.dumps({"image": "cat.jpg", "caption": "a cat"}))
  (data / "train.tsv").write_text(f"filepath\ttitle\n{data}/images/cat.jpg\ta cat\n")
  (data / "train.csv").write_text("path,text\nimages/cat.jpg,a cat\n")
  (data / "photos").mkdir()
  (data / "photos/cat.jpg").write_bytes(jpeg(1))
  (data / "photos/cat.txt").write_text("a cat")
  for name in ("cat", "dog"):
    (data / "classes" / name).mkdir(parents=True)
    (data / "classes" / name / "1.jpg").write_bytes(jpeg(2))
  (data / "shards").mkdir()
  for k in range(2):
    write_tar(data / f"shards/{k:05d}.tar", {f"{k}.jpg": jpeg(k), f"{k}.txt": b"a cat"})
  (data / "parquet").mkdir()
  for k in range(2):
    pq.write_table(pa.table({"image": [{"bytes": jpeg(k), "path": "x.jpg"}], "text": ["a cat"]}),
                   data / f"parquet/train-{k:05d}-of-00002.parquet")
  (data / "coco/train2017").mkdir(parents=True)
  (data / "coco/train2017/1.jpg").write_bytes(jpeg(3))
  (data / "coco/captions_train2017.json").write_text(json.dumps(
      {"images": [{"id": 1, "file_name": "1.jpg"}],
       "annotations": [{"image_id": 1, "id": 1, "caption": "a cat"}]}))
  from clipjax.data.array_record import write_array_record
  (data / "records").mkdir()
  write_array_record(make_source(f"manifest:manifest={data}/train.jsonl,image_root={data}/images"),
                     str(data / "records/train-{shard:05d}.array_record"), 1)
  (data / "tfds").mkdir()
  (data / "vqa/val2014").mkdir(parents=True)
  (data / "vqa/MultipleChoice_val2014_questions.json").write_text(json.dumps({"questions": [
      {"question_id": 1, "image_id": 1, "question": "what?", "multiple_choices": ["a", "b"]}]}))


def _config_has(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return False
    node = node[part]
  return True


def test_every_documented_command_and_spec_works(tmp_path, monkeypatch):
  commands = _commands()
  kinds = set()
  _write_documented_files(tmp_path)
  monkeypatch.chdir(tmp_path)
  for argv in commands:
    assert argv[:3] in (["python", "-m", "clipjax.main"], ["python", "-m", "clipjax.evaluate"])
    config_file = next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))
    spec = importlib.util.spec_from_file_location("documented_config", REPO / config_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for arg in rewrite_source_specs(argv[3:]):  # the CLI's own rewriting of source specs
      if not arg.startswith("--config."):
        continue
      field, value = arg[len("--config."):].split("=", 1)
      assert _config_has(config, field), (field, argv)
      if field == "data.train" or field.endswith(".source"):
        source_spec = ast.literal_eval(value)  # the dict literal rewrite_source_specs made
        kinds.add(source_spec["kind"])
        if source_spec["kind"] in ("tfds", "vqav1"):  # no prepared dataset here
          check_source_spec(source_spec)
          continue
        source = make_source(source_spec)
        record = PrepareExample(32, train=False)(source[0])
        assert isinstance(record, dict), (argv, record)
        assert record["image"].shape == (32, 32, 3) and np.any(record["caption"])
  assert kinds == {"manifest", "csv", "folder", "wds", "parquet", "coco", "array_record", "tfds",
                   "vqav1"}, kinds
  shutil.rmtree(tmp_path / "data")
