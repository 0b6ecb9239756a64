r"""CLIP-3Modal (seed 001 §4.3, methods.md §2): frozen image and text towers; a third (dialogue)
tower G, initialised from the text tower, trained with a·CE(G(z), I) + (1−a)·CE(G(z), T(y))
on the concatenated dialogue; evaluation blends T and G on the same caption.

  python -m clipjax.main --config=configs/three_tower.py
  --config.freeze='("^clip/","^dialogue/transformer/resblocks_[0-7]/")'  # train only the last blocks
"""
from clipjax.config import adaptation_run, parse_arg
from clipjax.methods import method_config


def get_config(arg=None):
  args = parse_arg(arg, arch="")
  # freeze rules, three_tower.*, and the base CLIP come from the method
  return adaptation_run(method_config("three_tower"), args.arch)
