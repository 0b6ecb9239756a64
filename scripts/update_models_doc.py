r"""Regenerates docs/models.md, the zoo table, from the registry and the pretrained-tag table:
every architecture's family, parameter count (from abstract shapes: nothing is allocated),
tags, Hugging Face class and the test that checks it.

  python scripts/update_models_doc.py   # ~3 minutes on 2 cores (one trace per architecture)
"""
import json
import pathlib

import jax
import numpy as np
from tqdm import tqdm

from clipjax.convert.openclip import param_shapes
from clipjax.models import zoo
from clipjax.models.registry import CLIPJAX_ONLY, MODEL_CONFIGS

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "docs/models.md"
TABLE = ROOT / "third_party/openclip_pretrained/pretrained.json"


def parameter_count(name: str) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(param_shapes(MODEL_CONFIGS[name])))


def main():
  table = json.loads(TABLE.read_text())
  names = [n for n in MODEL_CONFIGS if n not in CLIPJAX_ONLY]
  counts = {n: parameter_count(n) for n in tqdm(names, desc="counting parameters")}
  rows = zoo.zoo_rows(counts, table["tags"])
  OUT.write_text(zoo.render(rows, table["unsupported_architectures"]))
  print(f"wrote {OUT}: {len(rows)} architectures")


if __name__ == "__main__":
  main()
