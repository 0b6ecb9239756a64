r"""LiT: locked image tower (from model.checkpoint), text tower and logit scale trained with the
CLIP loss. Without a checkpoint the locked tower is random (a smoke test, not LiT)."""
from clipjax.config import parse_arg
from clipjax.methods import method_config


def get_config(arg=None):
  args = parse_arg(arg, arch="")
  c = method_config("lit")
  c.optim.lr = 1e-3
  c.model.arch = args.arch
  return c
