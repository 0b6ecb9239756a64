r"""Tokenizer throughput: clipjax vs open_clip's SimpleTokenizer on 10,000 captions, one run.

  python scripts/bench_tokenizer.py [--captions=/path/captions.txt]

Captions: one per line from --captions, else the vendored COCO sample's captions, else
synthetic sentences. The first clipjax call starts from an empty cache (cold); the second
is warm. Both outputs are checked to be identical before timing is reported.
"""
import json
import random
import time
from pathlib import Path

from absl import flags

from clipjax import cli

flags.DEFINE_string("captions", None, "Text file with one caption per line.")
flags.DEFINE_integer("n", 10_000, "Number of captions.")
FLAGS = flags.FLAGS
_COCO = Path(__file__).resolve().parents[1] / "third_party/coco_sample/captions_coco_format.json"


def _captions(n: int) -> tuple[list[str], str]:
  rng = random.Random(0)
  if FLAGS.captions:
    pool, source = Path(FLAGS.captions).read_text().splitlines(), FLAGS.captions
  elif _COCO.exists():
    pool = [a["caption"] for a in json.loads(_COCO.read_text())["annotations"]]
    source = "COCO sample captions, shuffled words"
    words = " ".join(pool).split()  # resample words: 10k distinct-ish captions from 145
    pool = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 18))) for _ in range(n)]
  else:
    words = "a photo of the dog cat red blue sitting on table with people near street".split()
    pool = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 18))) for _ in range(n)]
    source = "synthetic"
  return [pool[i % len(pool)] for i in range(n)], source


def main(argv):
  del argv
  import numpy as np
  import open_clip

  from clipjax.text.tokenizer import Tokenizer
  texts, source = _captions(FLAGS.n)
  ref_tok = open_clip.get_tokenizer("ViT-B-32")
  start = time.perf_counter()
  ref = ref_tok(texts).numpy()
  ref_s = time.perf_counter() - start
  ours_tok = Tokenizer()
  start = time.perf_counter()
  ours = ours_tok(texts)
  cold_s = time.perf_counter() - start
  start = time.perf_counter()
  ours_tok(texts)
  warm_s = time.perf_counter() - start
  assert np.array_equal(ours, ref), "token ids differ from open_clip"
  print(f"{len(texts)} captions ({source}); identical ids")
  print(f"open_clip SimpleTokenizer: {ref_s:.3f} s (its BPE cache warms up during the run)")
  print(f"clipjax cold cache:        {cold_s:.3f} s  -> {ref_s / cold_s:.1f}x")
  print(f"clipjax warm cache:        {warm_s:.3f} s  -> {ref_s / warm_s:.1f}x")


if __name__ == "__main__":
  cli.run(main)
