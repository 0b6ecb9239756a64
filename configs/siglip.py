r"""SigLIP (METHODS §7): pairwise sigmoid loss, t = exp(t') with t' init log 10, bias init −10."""
import math

from clipjax.train.config import base_config


def get_config(arg=None):
  args = dict(a.split("=", 1) for a in arg.split(",")) if arg else {}
  c = base_config("siglip")
  c.optim.lr = 1e-3
  c.model.arch = args.get("arch", c.model.arch)
  c.model.init_logit_scale = math.log(10.0)
  c.model.init_logit_bias = -10.0
  return c
