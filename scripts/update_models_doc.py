r"""Regenerates docs/models.md, the zoo table, from the registry and the pretrained-tag table:
every architecture's family, parameter count (from abstract shapes: nothing is allocated),
tags, Hugging Face class and the test that checks it.

  python scripts/update_models_doc.py   # ~3 minutes on 2 cores (one trace per architecture)

`--only=NAME,...` writes the table of those architectures alone (to `--out`), e.g. to check a
few rows against the committed file.
"""
import json
import pathlib

import jax
import numpy as np
from absl import flags
from tqdm import tqdm

from clipjax import cli
from clipjax.convert.openclip import param_shapes
from clipjax.errors import ConfigError
from clipjax.models import zoo
from clipjax.models.registry import CLIPJAX_ONLY, MODEL_CONFIGS

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLE = ROOT / "third_party/openclip_pretrained/pretrained.json"

flags.DEFINE_list("only", [], "Architectures to tabulate (default: every one).")
flags.DEFINE_string("out", str(ROOT / "docs/models.md"), "The markdown file to write.")
FLAGS = flags.FLAGS


def parameter_count(name: str) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(param_shapes(MODEL_CONFIGS[name])))


def main(argv):
  del argv
  names = [n for n in MODEL_CONFIGS if n not in CLIPJAX_ONLY]
  unknown = sorted(set(FLAGS.only) - set(names))
  if unknown:
    raise ConfigError(f"--only={','.join(FLAGS.only)}: {', '.join(unknown)} is not an open_clip "
                      "architecture clipjax registers (clipjax.list_models())")
  out = pathlib.Path(FLAGS.out)
  if not out.parent.is_dir():
    raise ConfigError(f"--out={out}: the directory {out.parent} does not exist")
  table = json.loads(TABLE.read_text())
  names = [n for n in names if not FLAGS.only or n in FLAGS.only]
  counts = {n: parameter_count(n) for n in tqdm(names, desc="counting parameters")}
  rows = zoo.zoo_rows(counts, table["tags"], names)
  out.write_text(zoo.render(rows, table["unsupported_architectures"]))
  print(f"wrote {out}: {len(rows)} architectures")


if __name__ == "__main__":
  cli.run(main)
