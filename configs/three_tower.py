r"""CLIP-3Modal (seed 001 §4.3, METHODS §2): frozen image and text towers; a third (dialogue)
tower G, initialised from the text tower, trained with a·CE(G(z), I) + (1−a)·CE(G(z), T(y))
on the concatenated dialogue; evaluation blends T and G on the same caption.

  python -m clipjax.main --config=configs/three_tower.py
  --config.freeze='("^clip/","^dialogue/transformer/resblocks_[0-7]/")'  # train only the last blocks
"""
from clipjax.config import parse_arg
from clipjax.methods import method_config


def get_config(arg=None):
  args = parse_arg(arg, arch="")
  c = method_config("three_tower")  # freeze rules, loss.a, dialogue mode, the base CLIP
  c.total_steps = 80
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 10
  if args.arch:
    c.model.arch = args.arch
    c.base = None  # real architectures start from an OpenCLIP checkpoint
  return c
