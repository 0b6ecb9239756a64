"""docs/models.md is the registry's zoo table, regenerated (`scripts/update_models_doc.py`)
whenever an architecture, tag or export class changes; its parameter counts are open_clip's."""
import json
import re
import subprocess
import sys

import jax
import numpy as np
import open_clip
import pytest
import torch
from conftest import REPO, assert_user_error

from clipjax.convert.openclip import param_shapes
from clipjax.models import get_model_config, zoo

_ROW = re.compile(r"^\| `([^`]+)` \|.*?\| ([\d.]+) ([MB]) \|", re.M)


def test_models_doc_matches_the_registry():
  doc = (REPO / "docs/models.md").read_text()
  counts = {name: float(value) * (1e9 if unit == "B" else 1e6)
            for name, value, unit in _ROW.findall(doc)}
  table = json.loads((REPO / "third_party/openclip_pretrained/pretrained.json").read_text())
  try:
    rows = zoo.zoo_rows(counts, table["tags"])
  except KeyError as e:
    pytest.fail(f"docs/models.md has no row for {e}; run python scripts/update_models_doc.py")
  assert zoo.render(rows, table["unsupported_architectures"]) == doc, (
      "docs/models.md is out of date: run python scripts/update_models_doc.py")
  assert "docs/models.md" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("arch", ["ViT-B-32", "MobileCLIP-B"])
def test_parameter_counts_are_open_clips(arch):
  """Our count (BatchNorm statistics included) equals the numel of open_clip's state_dict
  without BatchNorm's step counters, and the doc prints it."""
  ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(param_shapes(get_model_config(arch))))
  with torch.device("meta"):
    ref = open_clip.create_model(arch, pretrained=None, device="meta")
  theirs = sum(v.numel() for k, v in ref.state_dict().items()
               if not k.endswith("num_batches_tracked"))
  assert ours == theirs
  assert f"| `{arch}` |" in (REPO / "docs/models.md").read_text()
  assert f"| {zoo._count(ours)} |" in (REPO / "docs/models.md").read_text()


def test_the_generator_writes_these_rows(tmp_path, forked_cli):
  """The documented command, on two architectures: its rows are the committed file's."""
  out = subprocess.run([sys.executable, str(REPO / "scripts/update_models_doc.py"),
                        "--only=ViT-B-32,MobileCLIP-B", f"--out={tmp_path / 'models.md'}"],
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [line for line in (tmp_path / "models.md").read_text().splitlines()
          if line.startswith("| `")]
  doc = (REPO / "docs/models.md").read_text().splitlines()
  assert len(rows) == 2 and all(row in doc for row in rows)
  script = REPO / "scripts/update_models_doc.py"
  typo = forked_cli.run([script, "--only=ViT-B-23", f"--out={tmp_path / 'x.md'}"], cwd=REPO)
  assert_user_error(typo, "--only=ViT-B-23", "ViT-B-23 is not an open_clip architecture")
  bad = forked_cli.run([script, "--out=/no/dir/models.md"], cwd=REPO)
  assert_user_error(bad, "/no/dir", "does not exist")
  assert not (tmp_path / "x.md").exists()
