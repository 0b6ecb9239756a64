r"""LiT: locked image tower (from model.checkpoint), text tower and logit scale trained with the
CLIP loss. Without a checkpoint the locked tower is random (a smoke test, not LiT)."""
from clipjax.train.config import base_config


def get_config(arg=None):
  args = dict(a.split("=", 1) for a in arg.split(",")) if arg else {}
  c = base_config("lit")
  c.freeze = ("^clip/visual/",)
  c.optim.lr = 1e-3
  c.model.arch = args.get("arch", c.model.arch)
  return c
