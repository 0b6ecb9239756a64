r"""UniCL (seed 004, METHODS §4): image–label targets (same label = positive); the synthetic
scenes' label is the main object's colour + shape (64 classes)."""
from clipjax.train.config import base_config


def get_config(arg=None):
  args = dict(a.split("=", 1) for a in arg.split(",")) if arg else {}
  c = base_config("unicl")
  c.optim.lr = 1e-3
  c.model.arch = args.get("arch", c.model.arch)
  return c
