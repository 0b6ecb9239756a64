r"""SigLIP (METHODS §7): pairwise sigmoid loss, t = exp(t') with t' init log 10, bias init −10."""
from clipjax.config import parse_arg
from clipjax.methods import method_config


def get_config(arg=None):
  args = parse_arg(arg, arch="")
  c = method_config("siglip")
  c.optim.lr = 1e-3
  c.model.arch = args.arch
  return c
