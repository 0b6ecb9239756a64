r"""CLIP augmented with a MulT fusion tower (seed 001 §4.2, methods.md §6): image, text and MulT
towers trained jointly with a·CE(I,T) + b·CE(T,M) + (1−a−b)·CE(M,I); retrieval evaluates the
image and text towers, as for clip (the thesis found no gain over plain CLIP: docs/training.md).

  python -m clipjax.main --config=configs/mult.py                # from scratch, synthetic data
  python -m clipjax.main --config=configs/mult.py --config.mult.a=0.6 --config.mult.b=0.2
"""
from clipjax.config import parse_arg
from clipjax.methods import method_config


def get_config(arg=None):
  args = parse_arg(arg, arch="")
  c = method_config("mult")  # mult.a, mult.b and the fusion tower's size (mult.tower)
  c.optim.lr = 1e-3
  c.total_steps = 300
  c.model.arch = args.arch
  return c
