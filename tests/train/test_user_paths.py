"""`python -m clipjax.main` as a user types it: the README's own-data command on the shipped
COCO sample, typos and bad paths (one line, exit status 2, no traceback, nothing trained),
Ctrl-C that saves, and a rerun with another config that is refused. Users' own data and work
dirs: test_user_data.py."""
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, assert_user_error, cli_env

TINY = ["--config.model.arch=ViT-T-16-test", "--config.batch_size=8", "--config.eval.tasks=",
        "--config.export.hf=False", "--config.log_every=1", "--config.data.num_workers=1"]


def _main(*args, timeout=300, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "clipjax.main", *args], env=cli_env(), cwd=cwd,
                        capture_output=True, text=True, timeout=timeout)


def _readme_command(marker: str) -> list[str]:
  """The command line of README.md (or, for the longer examples, docs/*.md) holding `marker`."""
  for doc in (REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))):
    for line in doc.read_text().replace("\\\n", " ").splitlines():
      if marker in line and line.lstrip().startswith("python "):
        return shlex.split(line)
  raise AssertionError(f"no documented command holds {marker!r}")


def test_readme_own_data_command_trains_on_the_coco_sample(tmp_path, coco_sample):
  cmd = _readme_command("--config.data.train='manifest:manifest=third_party/coco_sample")
  assert cmd[:3] == ["python", "-m", "clipjax.main"], cmd
  out = _main(*cmd[3:], f"--workdir={tmp_path / 'wd'}")  # the README line + a work dir
  assert out.returncode == 0, out.stderr[-3000:]
  # Five captions per photo: 29 images -> 145 records, each a caption of its own.
  assert "145 samples per epoch" in out.stdout, out.stdout
  for noise in ("leaked shared_memory", "TPU", "tpu", "Traceback"):  # quiet on CPU
    assert noise not in out.stderr, out.stderr[-3000:]
  logged = [json.loads(l) for l in (tmp_path / "wd/metrics.jsonl").read_text().splitlines()]
  assert logged and all(r["loss"] == r["loss"] for r in logged)  # finite
  assert not (tmp_path / "wd/bad_records.jsonl").exists()
  # The printed PyTorch line runs as printed, in open_clip.
  line = out.stdout.split("load in PyTorch:\n", 1)[1].splitlines()[0].strip()
  run = subprocess.run([sys.executable, "-c", line + "; print(type(model).__name__)"],
                       env=cli_env(), capture_output=True, text=True, timeout=300)
  assert run.returncode == 0 and "CLIP" in run.stdout, run.stderr[-2000:]


def test_readme_fine_tuning_command(tmp_path):
  """The README's fine-tuning line (lion, an EMA, patch dropout) on a tiny model for 4 steps:
  the average is evaluated beside the weights and exported to export/ema."""
  cmd = _readme_command("--config.optim.name=lion")
  assert cmd[:3] == ["python", "-m", "clipjax.main"], cmd
  out = _main(*cmd[3:], f"--workdir={tmp_path / 'wd'}", *TINY, "--config.total_steps=4",
              "--config.data.train.resolution=32", "--config.eval.tasks=retrieval",
              "--config.eval.retrieval.source.size=32",
              "--config.eval.retrieval.source.resolution=32", "--config.eval.num_workers=0")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "clip_ema" in out.stdout, out.stdout[-3000:]  # a row of the retrieval table
  assert (tmp_path / "wd/export/ema/open_clip_model.safetensors").exists()
  logged = [json.loads(l) for l in (tmp_path / "wd/metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in logged] == [1, 2, 3, 4] and all(r["loss"] == r["loss"] for r in logged)


def test_readme_lora_command(tmp_path):
  """The README's LoRA line, its pretrained weights replaced by a local tiny checkpoint: the
  merged HF export and the PEFT adapter folder of rank 8 over the base export."""
  import clipjax
  cmd = _readme_command("--config.lora.rank=8")
  assert cmd[:3] == ["python", "-m", "clipjax.main"], cmd
  base = tmp_path / "base.safetensors"
  clipjax.export_openclip(clipjax.create_model("ViT-T-16-test")[1], "ViT-T-16-test", str(base))
  out = _main(*cmd[3:], f"--workdir={tmp_path / 'wd'}", *TINY, "--config.export.hf=True",
              f"--config.model.checkpoint={base}", "--config.model.pretrained=",
              "--config.total_steps=3", "--config.data.train.resolution=32")
  assert out.returncode == 0, out.stderr[-3000:]
  export = tmp_path / "wd/export"
  adapter = json.loads((export / "peft/adapter_config.json").read_text())
  assert adapter["r"] == 8 and adapter["base_model_name_or_path"] == str(export / "hf_base")
  assert (export / "peft/adapter_model.safetensors").exists()
  assert (export / "hf/model.safetensors").exists() and (export / "hf_base/config.json").exists()
  assert f"peft: {export / 'peft'}" in out.stdout, out.stdout[-2000:]


@pytest.mark.parametrize("args,needles", [
    (["--config.optim.lrr=1e-3"], ["--config.optim.lrr", "'lrr'", "did you mean 'lr'"]),
    (["--config.optim.lr=fast"], ["--config.optim.lr", "fast"]),
    (["--config.data.train=cocoa:annotations=a.json"], ["data.train", "'cocoa'", "'coco'"]),
    (["--config.data.train=manifest:manifest=/no/such.jsonl"], ["/no/such.jsonl", "does not exist"]),
    (["--config.data.train=coco:annotations=/no/a.json"], ["image_root"]),
    (["--config.model.arch=ViT-B-33"], ["ViT-B-33", "did you mean 'ViT-B-32'"]),
    (["--config.model.checkpoint=/no/model.safetensors"], ["/no/model.safetensors", "does not exist"]),
    (["--config.freeze=('^clip/visuall/',)"], ["^clip/visuall/", "matches no parameter"]),
    (["--config.draft.mmd.estimator=rf"], ["draft.mmd.estimator", "did you mean 'rff'"]),
    (["--config.eval.tasks=retrieval,zeroshto"], ["eval.tasks: unknown task 'zeroshto'",
                                                  "did you mean 'zeroshot'"]),
    (["--config.draft.form=sigmoid"], ["draft.form='sigmoid' needs a SigLIP base",
                                      "ViT-S-16-tiny"]),
    (["--config.optim.name=lino"], ["optim.name='lino'", "did you mean 'lion'"]),
    (["--config.model.attention=cudnn"], ["model.attention='cudnn' needs a GPU", "cpu"]),
    (["--config.model.remat_policy=dots_savable"], ["model.remat_policy='dots_savable'",
                                                    "did you mean 'dots_saveable'"]),
    (["--config.draft.dialogue_mode=all"], ["draft.dialogue_mode", "'one_qa', 'concat'"]),
    # the previous layout's fields: where they are now
    (["--config.loss.a=0.5"], ["--config.loss.a: loss.a is now draft.a"]),
    (["--config.loss.mmd.estimator=exact"], ["loss.mmd.estimator is now draft.mmd.estimator"]),
    (["--config.loss.tau=0.1"], ["loss.tau is now a method's own setting (multitask.tau); "
                                 "method draft has none"]),
    (["--config.data.train=synthetic:caption_detail=parial"],
     ["caption_detail='parial'", "did you mean 'partial'"]),
    (["--no_such_flag=1"], ["no_such_flag"]),
])
def test_user_errors_are_one_line_with_status_2(tmp_path, args, needles, forked_cli):
  out = forked_cli.run(["-m", "clipjax.main", f"--config={REPO}/configs/draft.py",
                        f"--workdir={tmp_path / 'wd'}", *args], cwd=REPO)
  assert_user_error(out, *needles)
  assert not (tmp_path / "wd").exists()  # nothing was written


def test_a_typo_in_a_fresh_interpreter_reads_as_in_a_forked_one(tmp_path, forked_cli):
  """The forked runner of the user-error tests (tests/forked_cli.py) against a plain
  `python -m clipjax.main`: the same status and the same stderr."""
  args = [f"--config={REPO}/configs/draft.py", f"--workdir={tmp_path / 'wd'}",
          "--config.optim.lrr=1e-3"]
  fresh = _main(*args, timeout=120)
  assert_user_error(fresh, "--config.optim.lrr", "did you mean 'lr'")
  forked = forked_cli.run(["-m", "clipjax.main", *args], cwd=REPO)
  assert (forked.returncode, forked.stderr, forked.stdout) == (
      fresh.returncode, fresh.stderr, fresh.stdout)


@pytest.mark.parametrize("config, needles", [
    ("draftt.py", ["draftt.py"]),
    ("multitask.py:stage=4", ["stage must be 1, 2 or 3"]),
    ("draft.py:arhc=ViT-B-32", ["'arhc'", "did you mean 'arch'"]),
    ("multitask.py:stage=two", ["stage='two'", "is not an int"]),
])
def test_missing_config_file_and_bad_config_argument(config, needles, forked_cli):
  out = forked_cli.run(["-m", "clipjax.main", f"--config={REPO}/configs/{config}"], cwd=REPO)
  assert_user_error(out, *needles)


@pytest.mark.parametrize("marker, repo", [
    ("configs/siglip.py:arch=ViT-B-16-SigLIP2", "timm/ViT-B-16-SigLIP2"),
    ("configs/siglip.py:arch=ViT-B-16-SigLIP2-NaFlex", "google/siglip2-base-patch16-naflex")])
def test_siglip_fine_tune_command_without_the_weights(tmp_path, marker, repo):
  """The README's SigLIP 2 fine-tuning lines (run where their data/train.jsonl exists), offline
  with an empty HF cache: one line naming the repository and the cache, nothing trained."""
  cmd = _readme_command(marker)
  assert cmd[:3] == ["python", "-m", "clipjax.main"], cmd
  (tmp_path / "data").mkdir()
  (tmp_path / "data/train.jsonl").write_text('{"image": "a.jpg", "caption": "a cat"}\n')
  cache = tmp_path / "hf"
  out = subprocess.run([sys.executable, "-m", "clipjax.main",
                        *[a.replace("configs/", f"{REPO}/configs/") for a in cmd[3:]],
                        f"--workdir={tmp_path / 'wd'}"],
                       env=dict(cli_env(), HF_HUB_CACHE=str(cache)), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
  assert_user_error(out, repo, str(cache))
  assert not (tmp_path / "wd/checkpoints").exists()


def _logged_steps(workdir):
  path = workdir / "metrics.jsonl"
  return [json.loads(l)["step"] for l in path.read_text().splitlines()] if path.exists() else []


def test_ctrl_c_saves_and_a_changed_rerun_is_refused(tmp_path):
  wd = tmp_path / "wd"
  args = [sys.executable, "-m", "clipjax.main", f"--config={REPO}/configs/clip.py",
          f"--workdir={wd}", *TINY, "--config.data.train.resolution=32",
          "--config.total_steps=400", "--config.checkpoint.every=1000"]
  # Ctrl-C in a terminal signals the whole process group (the grain workers too).
  proc = subprocess.Popen(args, env=cli_env(), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
  deadline = time.time() + 300
  while time.time() < deadline and not any(s >= 3 for s in _logged_steps(wd)):
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.2)
  os.killpg(proc.pid, signal.SIGINT)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  saved = re.search(r"SIGINT: saved step (\d+) in .*; rerun the same command to resume", err)
  assert saved, err[-3000:]
  assert (wd / "checkpoints" / saved.group(1)).is_dir()

  # Another learning rate would mix two experiments in one work dir: refused, nothing run.
  out = _main(*args[3:], "--config.optim.lr=0.1", timeout=120)
  assert_user_error(out, "optim.lr", "0.1", "--workdir")
  saved_config = json.loads((wd / "config.json").read_text())
  assert saved_config["optim"]["lr"] != 0.1
  # A work dir bound by the previous config layout (every method's settings in every run)
  # resumes: the CLIP setting is read under its new name, the others were never CLIP's.
  assert set(saved_config["clip"]) == {"same_image_positives"}
  saved_config["loss"].update(saved_config.pop("clip"), a=0.65, tau=0.05, mmd_weight=1.0,
                              mmd={"estimator": "rff"})
  saved_config["data"]["dialogue_mode"] = "one_qa"
  del saved_config["optim"]["name"]  # a field added since: the run trained with its default
  (wd / "config.json").write_text(json.dumps(saved_config))
  # A longer (or shorter) run of the same config resumes.
  out = _main(*args[3:], f"--config.total_steps={int(saved.group(1)) + 1}", timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"resumed from {wd / 'checkpoints'} at step {saved.group(1)}" in out.stdout


@pytest.mark.parametrize("cli,args,needles", [
    (["-m", "clipjax.evaluate"], [f"--config={REPO}/configs/eval.py", "--workdir=/tmp/x",
                                  "--config.model.chekpoint=a"], ["'chekpoint'", "'checkpoint'"]),
    (["-m", "clipjax.evaluate"], [f"--config={REPO}/configs/eval.py", "--workdir=/tmp/x",
                                  "--config.model.checkpoint=/no/w.safetensors"],
     ["/no/w.safetensors", "does not exist"]),
    (["-m", "clipjax.evaluate"], [f"--config={REPO}/configs/eval.py:coco", "--workdir=/tmp/x"],
     ["eval.retrieval.source", "annotations"]),
    (["-m", "clipjax.evaluate"], [f"--config={REPO}/configs/eval.py:cooc", "--workdir=/tmp/x"],
     ["'cooc'", "did you mean 'coco'"]),
    (["-m", "clipjax.evaluate"], [f"--config={REPO}/configs/eval.py", "--workdir=/tmp/x",
                                  "--config.eval.tasks=vqa,retreival"],
     ["eval.tasks: unknown task 'retreival'", "did you mean 'retrieval'"]),
    (["-m", "clipjax.search"], ["--index=/no/index", "--query=a cat"], ["not a clipjax index"]),
    (["-m", "clipjax.search"], ["--index=/tmp/i", "--images=/no/photos"], ["/no/photos"]),
    (["-m", "clipjax.search"], ["--index=/tmp/i"], ["--images", "--query"]),
    (["-m", "clipjax.main"], [f"--config={REPO}/configs/distill.py", "--workdir=/tmp/x"],
     ["distill.teacher is empty", "--config.distill.teacher=ViT-L-14"]),
    (["-m", "clipjax.main"], [f"--config={REPO}/configs/clip.py", "--workdir=/tmp/x",
                              "--config.model.patch_dropout=1.5"],
     ["model.patch_dropout=1.5 must be in [0, 1)"]),
    (["-m", "clipjax.main"], [f"--config={REPO}/configs/clip.py", "--workdir=/tmp/x",
                              "--config.lora.rank=4", "--config.lora.dropout=1.5"],
     ["lora.dropout=1.5 must be in [0, 1)"]),
    (["-m", "clipjax.main"], [f"--config={REPO}/configs/siglip.py:arch=ViT-T-16-SigLIP2-NaFlex-test",
                              "--workdir=/tmp/x", "--config.data.naflex.lengths=(16, 0)"],
     ["data.naflex.lengths=[16, 0] must be positive patch counts"]),
    (["-m", "clipjax.main"], [f"--config={REPO}/configs/siglip.py:arch=ViT-T-16-SigLIP2-NaFlex-test",
                              "--workdir=/tmp/x", "--config.data.naflex.token_budget=100"],
     ["token budget of 100 patches per device holds no batch at length 128"]),
    (["-m", "clipjax.main"], [f"--config={REPO}/configs/clip.py", "--workdir=/tmp/x",
                              "--config.data.naflex.lengths=(64,)"],
     ["data.naflex is for SigLIP 2 NaFlex image towers"]),
    (["-m", "clipjax.main"], [f"--config={REPO}/configs/clip.py", "--workdir=/tmp/x",
                              "--config.loss.exchange=rign"],
     ["loss.exchange='rign'", "did you mean 'ring'"]),
    (["-m", "clipjax.main"], [f"--config={REPO}/configs/distill.py", "--workdir=/tmp/x",
                              "--config.distill.teacher=ViT-T-16-test",
                              "--config.loss.exchange=ring"],
     ["loss.exchange='ring' is not read by distill's loss (distill_loss)",
      "set loss.exchange=all_gather"]),
    (["-m", "clipjax.main"], [f"--config={REPO}/configs/distill.py", "--workdir=/tmp/x",
                              "--config.distill.teacher=ViT-T-16-test",
                              "--config.loss.block_size=64"],
     ["loss.block_size=64 is not read by distill's loss", "set loss.block_size=0"]),
    (["-m", "clipjax.evaluate"], [f"--config={REPO}/configs/eval.py", "--workdir=/tmp/x",
                                  "--config.model.max_num_patches=(64,)"],
     ["model.max_num_patches=[64] is for SigLIP 2 NaFlex image towers"]),
    ([str(REPO / "scripts/convert.py")], ["--input=/no/w.pt", "--output=/tmp/o.safetensors"],
     ["/no/w.pt", "does not exist"]),
    ([str(REPO / "scripts/convert.py")], ["--input=ViT-B-32", "--pretrained=laion2b",
                                          "--output=/tmp/o.safetensors"], ["laion2b"]),
    ([str(REPO / "scripts/convert.py")], ["--inptu=w.pt"], ["inptu"]),
    ([str(REPO / "scripts/quickstart.py")], ["--checkpoint=/no/w.safetensors"], ["does not exist"]),
    ([str(REPO / "scripts/quickstart.py")], ["--archh=ViT-B-32"], ["archh"]),
    ([str(REPO / "scripts/bench_compile.py")], ["--archs=ViT-L-15"],
     ["unknown architecture 'ViT-L-15'"]),
    ([str(REPO / "scripts/plan_scale.py")], ["--methods=drfat"], ["method='drfat'"]),
    ([str(REPO / "scripts/bench_train.py")], ["--lora=-2"], ["--lora=-2", ">= 0"]),
    ([str(REPO / "scripts/bench_train.py")], ["--patch_dropout=1.5"], ["--patch_dropout=1.5"]),
    ([str(REPO / "scripts/bench_train.py")], ["--arch=RN-T-test", "--patch_dropout=0.5"],
     ["ResNet image tower"]),
    ([str(REPO / "scripts/plan_scale.py")], ["--out=/no/dir/scaling.md"],
     ["/no/dir", "does not exist"]),
])
def test_every_cli_reports_user_errors_in_one_line(cli, args, needles, forked_cli):
  assert_user_error(forked_cli.run([*cli, *args], cwd=REPO), *needles)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
def test_no_tpu_initialisation_errors_on_a_cpu_machine():
  """With the test extra's libtpu installed and no TPU chip, `import clipjax` keeps jax off the
  TPU backend: no libtpu errors on stderr before the CPU run (platforms left unset by the
  user, as a user's shell leaves them)."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  out = subprocess.run([sys.executable, "-c", "import clipjax, jax; print(jax.devices()[0].platform)"],
                       env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "cpu"
  assert "TPU" not in out.stderr and "libtpu" not in out.stderr, out.stderr[-2000:]
