r"""CLIP-3Modal (seed 001 §4.3, METHODS §2): frozen image and text towers; a third (dialogue)
tower G, initialised from the text tower, trained with a·CE(G(z), I) + (1−a)·CE(G(z), T(y))
on the concatenated dialogue; evaluation blends T and G on the same caption.

  python -m clipjax.main --config=configs/three_tower.py
  --config.freeze='("^clip/","^dialogue/transformer/resblocks_[0-7]/")'  # train only the last blocks
"""
from clipjax.train.config import base_clip_block, base_config


def get_config(arg=None):
  args = dict(a.split("=", 1) for a in arg.split(",")) if arg else {}
  c = base_config("three_tower")
  c.freeze = ("^clip/",)  # I, T and the logit scale stay at the pretrained values
  c.total_steps = 80
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 10
  c.loss.a = 0.65
  c.data.dialogue_mode = "concat"
  c.base = base_clip_block()
  if "arch" in args:
    c.model.arch = args["arch"]
    c.base = None
  return c
