r"""Regenerates third_party/openclip_pretrained/pretrained.json from the installed open_clip:
the pretrained tags of every architecture clipjax registers (hub repo, QuickGELU flag and the
checkpoint's preprocessing), and the names of the architectures it does not.

  python scripts/update_pretrained_table.py   # needs the torch extra (open_clip)
"""
import json
import pathlib

import open_clip

from clipjax.models.registry import MODEL_CONFIGS

_KEEP = ("hf_hub", "quick_gelu", "mean", "std", "interpolation", "resize_mode")
OUT = pathlib.Path(__file__).resolve().parents[1] / "third_party/openclip_pretrained/pretrained.json"


def main():
  tags, other = {}, set()
  for arch, tag in open_clip.list_pretrained():
    if arch not in MODEL_CONFIGS:
      other.add(arch)
      continue
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    tags.setdefault(arch, {})[tag] = {k: cfg[k] for k in _KEEP if k in cfg}
  OUT.write_text(json.dumps({"open_clip_version": open_clip.__version__, "tags": tags,
                             "unsupported_architectures": sorted(other)}, indent=1) + "\n")
  print(f"wrote {OUT}: {sum(map(len, tags.values()))} tags of {len(tags)} architectures")


if __name__ == "__main__":
  main()
