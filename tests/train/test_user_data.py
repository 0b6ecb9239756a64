"""`python -m clipjax.main` on users' own data and work dirs, typed as a user would: bad records
named and skipped, open_clip's and Hugging Face's formats, brace specs, one run per work dir,
a start-up crash, an unwritable dir, kill -9 and resume, `~` paths, offline misses, --help."""
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import portpicker
import pytest
from bad_data import BAD_LINES, bad_shard_members, write_bad_images, write_tar
from conftest import REPO, assert_user_error, xla_flags

# A tiny model; one text length (no trimming buckets) so every run compiles one step program.
TINY = ["--config.model.arch=ViT-T-16-test", "--config.batch_size=8", "--config.eval.tasks=",
        "--config.export.hf=False", "--config.export.openclip=False", "--config.log_every=1",
        "--config.data.num_workers=1", "--config.data.trim_text=False"]


def _env(**extra):
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1",
              XLA_FLAGS=xla_flags(1), **extra)


def _main(*args, timeout=300, cwd=REPO, env=None):
  return subprocess.run([sys.executable, "-m", "clipjax.main", *args], env=env or _env(),
                        cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _clip(workdir, *args, config="clip"):
  return [f"--config={REPO}/configs/{config}.py", f"--workdir={workdir}", *TINY, *args]


def _bad_records(workdir) -> list[dict]:
  return [json.loads(l) for l in (workdir / "bad_records.jsonl").read_text().splitlines()]


def _coco_lines(coco_sample, n: int) -> list[bytes]:
  """n COCO photos with their first captions, image ids 0..n-1, absolute paths."""
  rows = [json.loads(l) for l in (coco_sample / "manifest.jsonl").read_text().splitlines()]
  return [json.dumps({"image": str(coco_sample / row["image"]), "caption": row["captions"][0],
                      "image_id": i}).encode() for i, row in enumerate(rows[:n])]


def test_a_manifest_with_every_kind_of_bad_record_trains(tmp_path, coco_sample):
  write_bad_images(tmp_path)
  manifest = tmp_path / "train.jsonl"
  manifest.write_bytes(b"\n".join(_coco_lines(coco_sample, 13) + [l for l, _, _ in BAD_LINES]))
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  # 24 lines, 13 good: 4 steps of 8 read every line at least once (two epochs). Paths typed
  # with `~` (HOME is tmp_path): a shell leaves `--x=~/a` as it is, clipjax expands it.
  out = _main(f"--config={REPO}/configs/clip.py", "--workdir=~/wd", *TINY,
              "--config.data.train=manifest:manifest=~/train.jsonl", "--config.total_steps=4",
              cwd=cwd, env=_env(HOME=str(tmp_path)))
  assert out.returncode == 0, out.stderr[-3000:]
  assert not (cwd / "~").exists()
  records = _bad_records(tmp_path / "wd")
  # Each once, though read in two epochs.
  assert len(records) == len(BAD_LINES), [r["detail"].split(": ")[0] for r in records]
  for i, (_, reason, needle) in enumerate(BAD_LINES):
    (row,) = [r for r in records if r["detail"].startswith(f"{manifest}:{14 + i}: ")]
    assert row["reason"] == reason and needle in row["detail"], row
  assert "skipped " in out.stderr and f"each one is named in {tmp_path / 'wd'}" in out.stderr


def test_tar_shards_with_bad_samples_and_a_quoted_brace_spec(tmp_path, coco_sample, forked_cli):
  photos = sorted((coco_sample / "images").glob("*.jpg"))
  for shard in range(2):
    good = {}
    for k, photo in enumerate(photos[shard * 6:(shard + 1) * 6]):
      good[f"s{shard}_{k}.jpg"] = photo.read_bytes()
      good[f"s{shard}_{k}.txt"] = f"photo {k} of shard {shard}".encode()
    members = bad_shard_members(good) if shard == 1 else good
    write_tar(tmp_path / f"{shard:05d}.tar", members)
  # The README's form: the spec quoted, one argument (clipjax expands the range itself).
  out = _main(*_clip(tmp_path / "wd", f"--config.data.train=wds:shards={tmp_path}/"
                                      "{00000..00001}.tar", "--config.total_steps=4"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "17 samples per epoch" in out.stdout, out.stdout  # 12 good + 5 bad, both shards
  named = {r["detail"].split(": ")[0]: r["reason"] for r in _bad_records(tmp_path / "wd")}
  assert named == {"00001.tar:bad_image": "corrupt_image", "00001.tar:no_caption":
                   "missing_field", "00001.tar:bad_text.txt": "bad_encoding",
                   "00001.tar:bad_meta.json": "bad_json", "00001.tar:bomb": "too_large"}, named
  # Unquoted, a shell makes two flags of the range: refused, not trained on the last shard.
  out = forked_cli.run(["-m", "clipjax.main", *_clip(
      tmp_path / "wd2", f"--config.data.train=wds:shards={tmp_path}/00000.tar",
      f"--config.data.train=wds:shards={tmp_path}/00001.tar")], cwd=REPO)
  assert_user_error(out, "--config.data.train is given twice", "quote the spec")
  out = forked_cli.run(["-m", "clipjax.main", *_clip(
      tmp_path / "wd2", f"--config.data.train=wds:shards={tmp_path}/{{00000..00002}}.tar")],
      cwd=REPO)
  assert_user_error(out, "1 of the files it names do not exist", "00002.tar")


def _write_formats(root, coco_sample) -> dict[str, str]:
  """The same 12 COCO photos as open_clip's TSV, a comma CSV, a sidecar folder, a class
  folder and parquet as Hugging Face datasets stores images: spec -> the config trained."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  rows = [json.loads(l) for l in (coco_sample / "manifest.jsonl").read_text().splitlines()][:12]
  images = [coco_sample / r["image"] for r in rows]
  captions = [r["captions"][0] for r in rows]
  (root / "train.tsv").write_text("filepath\ttitle\n" + "".join(
      f"{p}\t{c}\n" for p, c in zip(images, captions)))
  (root / "train.csv").write_text("filepath,title\n" + "".join(
      f'{p},"{c}"\n' for p, c in zip(images, captions)))
  (root / "sidecar").mkdir()
  for k, (p, c) in enumerate(zip(images, captions)):
    shutil.copy(p, root / "sidecar" / f"{k:09d}.jpg")
    (root / "sidecar" / f"{k:09d}.txt").write_text(c)
  for k, p in enumerate(images):
    (root / "classes" / ("indoor", "outdoor")[k % 2]).mkdir(parents=True, exist_ok=True)
    shutil.copy(p, root / "classes" / ("indoor", "outdoor")[k % 2] / p.name)
  table = pa.table({"image": [{"bytes": p.read_bytes(), "path": p.name} for p in images],
                    "text": captions})
  pq.write_table(table, root / "train-00000-of-00001.parquet", row_group_size=5)
  return {
      f"csv:file={root}/train.tsv": "clip",
      f"csv:file={root}/train.csv": "clip",
      f"folder:root={root}/sidecar": "clip",
      f"folder:root={root}/classes": "unicl",  # labels from the folder names
      f"parquet:files={root}/train-{{00000..00000}}-of-00001.parquet,caption_key=text": "clip",
  }


def test_open_clip_and_hugging_face_formats_train(tmp_path, coco_sample):
  """Two formats train through the CLI (open_clip's TSV with CLIP, class folders with UniCL's
  labels); every format's records come out of the training pipeline, each one usable."""
  from clipjax.data.pipeline import PrepareExample, build_dataset
  from clipjax.data.streams import image_text_source
  from clipjax.options import DataOptions
  formats = _write_formats(tmp_path, coco_sample)
  for spec, config in formats.items():
    source = image_text_source(DataOptions(train=spec))
    batches = list(build_dataset(source, PrepareExample(32, train=True), batch_size=4,
                                 num_epochs=1, num_workers=0, pad_remainder=True))
    assert len(source) == 12 and sum(int(b["mask"].sum()) for b in batches) == 12, spec
    assert not any(b["bad_records"].any() for b in batches), spec
    if config == "unicl":
      assert sorted({int(l) for b in batches for l in b["label"][b["mask"]]}) == [0, 1]
  trained = [(spec, config) for spec, config in formats.items()
             if spec.startswith("csv:") and spec.endswith(".tsv") or config == "unicl"]
  assert len(trained) == 2
  for i, (spec, config) in enumerate(trained):
    # Records read in the training process (the other tests here use a worker process).
    out = _main(*_clip(tmp_path / f"wd{i}", f"--config.data.train={spec}",
                       "--config.total_steps=2", "--config.data.num_workers=0", config=config))
    assert out.returncode == 0, (spec, out.stderr[-3000:])
    assert "12 samples per epoch" in out.stdout, (spec, out.stdout)
    assert not (tmp_path / f"wd{i}/bad_records.jsonl").exists(), spec
    losses = [json.loads(l)["loss"] for l in (tmp_path / f"wd{i}/metrics.jsonl").open()]
    assert len(losses) == 2 and all(l == l for l in losses), (spec, losses)


def _logged_steps(workdir) -> list[int]:
  path = workdir / "metrics.jsonl"
  return [json.loads(l)["step"] for l in path.read_text().splitlines()] if path.exists() else []


def test_one_run_per_work_dir_and_kill_9_resumes_without_repeated_steps(tmp_path):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  wd = tmp_path / "wd"
  args = _clip(wd, "--config.data.train.resolution=32", "--config.total_steps=400",
               "--config.checkpoint.every=3")
  proc = subprocess.Popen([sys.executable, "-m", "clipjax.main", *args], env=_env(), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
  try:
    deadline = time.time() + 300
    while time.time() < deadline and not any(s >= 5 for s in _logged_steps(wd)):
      assert proc.poll() is None, proc.communicate()[1][-3000:]
      time.sleep(0.2)
    second = _main(*args, timeout=120)  # the same command again, while the first one runs
    assert_user_error(second, f"work dir {wd} is in use by process {proc.pid} on ",
                       "another --workdir")
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
  logged = _logged_steps(wd)
  saved = max(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  total = max(logged) + 2
  assert saved < max(logged), (saved, logged)  # steps after the checkpoint were logged
  # The killed run's lock file is still there; the rerun takes it over and resumes.
  out = _main(*args[:-2], f"--config.total_steps={total}", "--config.checkpoint.every=3")
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"at step {saved}" in out.stdout
  assert _logged_steps(wd) == list(range(1, total + 1))
  events = EventAccumulator(str(wd / "tensorboard"))
  events.Reload()
  steps = [e.step for e in events.Scalars("train/loss")]
  assert sorted(steps) == list(range(1, total + 1)), collections.Counter(steps)


def test_a_start_up_crash_binds_nothing_and_an_unwritable_work_dir_is_one_line(tmp_path,
                                                                               forked_cli):
  # A source with no usable record stops (it does not search forever), naming what it saw.
  all_bad = tmp_path / "all_bad.jsonl"
  all_bad.write_bytes(b"\n".join(l for l, _, _ in BAD_LINES) + b"\n")
  wd = tmp_path / "wd"
  out = _main(*_clip(wd, f"--config.data.train=manifest:manifest={all_bad}"))
  assert_user_error(out, f"no usable record in {len(BAD_LINES)} records of the data source in a "
                         "row", "missing_file 4", "bad_json 2", "bad_field 2", "e.g. ")
  assert (wd / "config.json").exists() and not list((wd / "checkpoints").glob("[0-9]*"))
  out = _main(*_clip(wd, "--config.data.train.resolution=32", "--config.total_steps=1",
                     "--config.optim.lr=1e-3"))  # another config on the same dir: accepted
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.loads((wd / "config.json").read_text())["optim"]["lr"] == 1e-3
  (tmp_path / "a_file").write_text("")
  for workdir, reason in ((tmp_path / "a_file/wd", "Not a directory"),
                          ("/proc/clipjax-wd", "No such file or directory")):
    out = forked_cli.run(["-m", "clipjax.main", *_clip(workdir)], cwd=REPO)
    assert_user_error(out, f"work dir {workdir} is not writable ({reason})")
  if os.geteuid() != 0:  # root writes into a read-only directory anyway
    (tmp_path / "ro").mkdir(mode=0o555)
    out = forked_cli.run(["-m", "clipjax.main", *_clip(tmp_path / "ro")], cwd=REPO)
    assert_user_error(out, "is not writable (Permission denied)")


def test_an_offline_miss_fails_at_once_naming_the_cache(tmp_path):
  port = portpicker.pick_unused_port()  # nothing listens there: the hub is unreachable
  env = _env(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"))
  del env["HF_HUB_OFFLINE"], env["TRANSFORMERS_OFFLINE"]
  started = time.time()
  out = _main(*_clip(tmp_path / "wd", "--config.model.checkpoint=ViT-B-32",
                     "--config.model.pretrained=laion2b_s34b_b79k"), env=env, timeout=120)
  seconds = time.time() - started
  assert_user_error(out, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K is not in the Hugging Face "
                          f"cache ({tmp_path / 'hf' / 'hub'})",
                     f"the hub (http://127.0.0.1:{port}) cannot be reached")
  assert "thrown while requesting" not in out.stderr  # no HTTP request, so no retries
  print(f"offline miss: {seconds:.1f} s for the whole command")  # ~2 s here, incl. imports


@pytest.mark.parametrize("cli,args,needles", [
    ("clipjax.main", [], ["--workdir", "config fields: add --config=FILE"]),
    ("clipjax.main", [f"--config={REPO}/configs/draft.py"],
     ["--config.draft.mmd.estimator='rff'", "--config.optim.lr=0.0001"]),
    ("clipjax.evaluate", [f"--config={REPO}/configs/eval.py"], ["--config.model.checkpoint="]),
    ("clipjax.search", [], ["--index", "--images", "--query"]),
])
def test_help_exits_0_and_lists_flags_and_config_fields(cli, args, needles, forked_cli):
  flag = "-h" if cli == "clipjax.search" else "--help"
  out = forked_cli.run(["-m", cli, *args, flag], cwd=REPO)
  assert out.returncode == 0, out.stderr[-2000:]
  for needle in needles:
    assert needle in out.stdout, out.stdout[-3000:]
