r"""Every headline ratio of docs/benchmarks.md in one run, one benchmark process after another:

  python scripts/bench_all.py            # ~25 minutes on a 2-core CPU
  python scripts/bench_all.py --small    # the same scripts at their smallest setting

Runs the encoders, the tokenizer, the input pipeline, the DRAFT and CLIP training steps (at
equal work and trimmed) and the DRAFT loss (tiled vs dense), each in its own process on an
otherwise idle machine, and prints every line that states a ratio, then a summary table to
paste into docs/benchmarks.md's history. Ratios are clipjax's speed over the reference's
(above 1 is faster), measured side by side in the same process.
"""
import re
import subprocess
import sys
import time
from pathlib import Path

from absl import flags

from clipjax import cli
from clipjax.errors import ConfigError

flags.DEFINE_bool("small", False, "Each benchmark at its smallest setting (the test suite).")
flags.DEFINE_list("only", [], "Run only these benchmarks (names of HEADLINES).")
FLAGS = flags.FLAGS

SCRIPTS = Path(__file__).resolve().parent
# name -> the command line of the headline figure (script, flags).
HEADLINES = {
    "encode": ("bench_encode.py", []),
    "tokenizer": ("bench_tokenizer.py", []),
    "data": ("bench_data.py", []),
    "draft_step": ("bench_train.py", []),
    "clip_step": ("bench_train.py", ["--method=clip"]),
    "loss": ("bench_loss.py", ["--batches=4096", "--paths=dense,tiled"]),
}
# The smallest setting of each benchmark script, appended to its flags (absl: the last value
# of a flag wins). tests/test_documented_commands.py runs every documented command this way.
SMALL = {
    "bench_train.py": ["--batch=8", "--steps=1", "--arch=ViT-T-16-test"],
    "bench_encode.py": ["--batch=4", "--repeats=1", "--matmul_size=256", "--max_num_patches=16",
                        "--arch=ViT-T-16-test"],
    "bench_loss.py": ["--batches=256", "--block=64", "--num_features=4", "--dim=16",
                      "--repeats=1"],
    "bench_tokenizer.py": ["--n=200"],
    "bench_synthetic.py": ["--n=50", "--resolution=32"],
    "bench_data.py": ["--n=32", "--batch=8", "--workers=1", "--repeats=1"],
    "bench_compile.py": ["--archs=ViT-T-16-test", "--batch=2", "--steps=1"],
    "bench_ann.py": ["--n=2000", "--dim=16", "--queries=50", "--ef_search=32"],
    # the orchestration on its cheapest child: every benchmark script runs on its own as well
    "bench_all.py": ["--small", "--only=tokenizer"],
}
RATIO = re.compile(r"(\d+\.\d+)x")


def main(argv):
  del argv
  names = FLAGS.only or list(HEADLINES)
  unknown = sorted(set(names) - set(HEADLINES))
  if unknown:
    raise ConfigError(f"--only={','.join(unknown)}: not one of {', '.join(HEADLINES)}")
  summary = []
  for name in names:
    script, args = HEADLINES[name]
    command = [sys.executable, str(SCRIPTS / script), *args,
               *(SMALL[script] if FLAGS.small else [])]
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
      print(out.stderr[-3000:], file=sys.stderr)
      raise SystemExit(f"bench_all: {name} failed (exit {out.returncode})")
    for line in out.stdout.splitlines():
      if RATIO.search(line):
        print("   " + line.strip())
        summary.append((name, line.strip()))
    print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)
  print("\n| benchmark | line | ratio |\n|---|---|---|")
  for name, line in summary:
    print(f"| {name} | {RATIO.sub('', line).strip()[:70]} | {RATIO.findall(line)[-1]}x |")


if __name__ == "__main__":
  cli.run(main)
