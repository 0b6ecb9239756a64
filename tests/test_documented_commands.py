"""Every command README.md and docs/ show runs in the suite, read from the docs themselves.

Benchmark commands (`python scripts/bench_*.py ...`) run here as documented, with flags
appended that shrink them to their smallest setting (a tiny architecture, one step, a small
batch; absl takes the last value of a flag): each must exit 0 and print its table. Every
other command is run by the test module named for it in `RUN_BY`, which must exist and run
that entry point. A documented command with neither fails, so a new one comes with its test.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, assert_user_error, xla_flags

sys.path.insert(0, str(REPO / "scripts"))
from bench_all import SMALL  # noqa: E402  (the smallest setting of each benchmark)

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND = re.compile(r"python (scripts/\w+\.py|-m clipjax[\w.]*)([^`|\n]*)")

# What each benchmark's table prints (checked, never a time).
HEADER = {
    "bench_train": r"samples/s",
    "bench_encode": r"clipjax\s+(open_clip|transformers)\s+ratio",
    "bench_loss": r"peak RSS GB",
    "bench_tokenizer": r"identical ids",
    "bench_synthetic": r"samples/s",
    "bench_data": r"images/s",
    "bench_compile": r"compile",
    "bench_ann": r"recall@10",
    "bench_all": r"\| benchmark \| line \| ratio \|",
}
# The tiny test architecture of each family a documented --arch belongs to.
SMALL_ARCH = (("NaFlex", "ViT-T-16-SigLIP2-NaFlex-test"), ("SigLIP", "ViT-T-16-SigLIP2-test"),
              ("", "ViT-T-16-test"))
# Commands run by other test modules: entry point -> the module that runs it.
RUN_BY = {
    "-m clipjax.main": "train/test_main.py",
    "-m clipjax.evaluate": "evaluate/test_runner.py",
    "-m clipjax.search": "evaluate/test_runner.py",
    "-m clipjax.study": "study/test_study.py",
    "scripts/convert.py": "convert/test_convert.py",
    "scripts/generate_dialogue.py": "data/test_generate_dialogue.py",
    "scripts/plan_scale.py": "parallel/test_plan_scale.py",
    "scripts/bench_device.py": "train/test_bench_device.py",  # its own --small run
    "scripts/update_models_doc.py": "models/test_zoo_doc.py",
}


def documented_commands() -> list[tuple[str, list[str]]]:
  """(entry point, flags) of every `python ...` command in README.md and docs/*.md."""
  found = []
  for path in DOCS:
    for entry, rest in COMMAND.findall(path.read_text()):
      rest = rest.split("#")[0].replace("\\", " ")
      rest = re.sub(r"\[[^\]]*\]", "", rest)  # usage placeholders: [--workdir=DIR]
      try:
        args = [a for a in shlex.split(rest) if a.startswith("--")]
      except ValueError:  # an unbalanced quote in prose: the flags up to it
        args = [a for a in rest.split() if a.startswith("--")]
      found.append((entry, args))
  return found


def _bench_runs() -> list[list[str]]:
  """The distinct benchmark command lines at their smallest setting."""
  runs = {}
  for entry, args in documented_commands():
    script = Path(entry).name
    if script not in SMALL:
      continue
    arch = next((a.split("=", 1)[1] for a in args if a.startswith("--arch=")), "")
    small = [f"--arch={tiny}" for key, tiny in SMALL_ARCH if key in arch][:1] if arch else []
    given = dict(a.split("=", 1) if "=" in a else (a, "") for a in [*args, *SMALL[script], *small])
    flags_ = [f"{k}={v}" if v else k for k, v in given.items()]  # absl: the last value wins
    runs[(entry, *sorted(flags_))] = [entry, *flags_]
  return list(runs.values())


def test_every_documented_command_has_a_test():
  entries = {entry for entry, _ in documented_commands()}
  assert {"scripts/bench_train.py", "scripts/bench_encode.py", "-m clipjax.main"} <= entries
  for entry in entries:
    if Path(entry).name in SMALL:
      continue
    key = next((k for k in RUN_BY if entry == k or entry.startswith(k + ".")
                or k.startswith(entry)), None)
    assert key, f"documented `python {entry}` has no smallest setting here and no test"
    module = REPO / "tests" / RUN_BY[key]
    assert module.exists(), module
    # run as a user types it: `"-m", "clipjax.x"` in a subprocess call, or the script's path
    invoked = (f'"-m", "{key[3:]}"' if key.startswith("-m ")
               else f'"{key}"' if '"scripts" /' not in module.read_text() else Path(key).name)
    assert invoked in module.read_text(), f"{module} does not run `python {entry}`"


@pytest.mark.parametrize("line", _bench_runs(), ids=lambda line: " ".join(line[:1] + line[1:3]))
def test_documented_benchmark_runs_at_its_smallest_setting(line, tmp_path):
  env = {**os.environ, "XLA_FLAGS": xla_flags(1)}  # one device: the benchmarks' batches
  out = subprocess.run([sys.executable, str(REPO / line[0]), *line[1:]], capture_output=True,
                       text=True, timeout=600, cwd=tmp_path, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert re.search(HEADER[Path(line[0]).stem], out.stdout), out.stdout[-3000:]


def test_bench_all_names_an_unknown_benchmark(forked_cli):
  out = forked_cli.run([REPO / "scripts/bench_all.py", "--only=encdoe"], cwd=REPO)
  assert_user_error(out, "--only=encdoe", "draft_step")
