r"""UniCL (seed 004, docs/methods.md §4): image–label targets (same label = positive); the synthetic
scenes' label is the main object's colour + shape (64 classes)."""
from clipjax.config import parse_arg
from clipjax.methods import method_config


def get_config(arg=None):
  args = parse_arg(arg, arch="")
  c = method_config("unicl")
  c.optim.lr = 1e-3
  c.model.arch = args.arch
  return c
