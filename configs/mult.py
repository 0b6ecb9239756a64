r"""CLIP augmented with a MulT fusion tower (seed 001 §4.2, METHODS §6): image, text and MulT
towers trained jointly with a·CE(I,T) + b·CE(T,M) + (1−a−b)·CE(M,I); retrieval evaluates the
image and text towers, as for clip (the thesis found no gain over plain CLIP: docs/training.md).

  python -m clipjax.main --config=configs/mult.py                # from scratch, synthetic data
  python -m clipjax.main --config=configs/mult.py --config.loss.a=0.6 --config.loss.b=0.2
"""
from clipjax.train.config import base_config


def get_config(arg=None):
  args = dict(a.split("=", 1) for a in arg.split(",")) if arg else {}
  c = base_config("mult")
  c.optim.lr = 1e-3
  c.total_steps = 300
  c.loss.a = 0.5   # CE(I, T): the pair retrieval is evaluated on
  c.loss.b = 0.25  # CE(T, M); CE(M, I) gets 1 − a − b
  # The fusion tower (clipjax/models/mult.py); its vocabulary follows the text tower.
  c.loss.mult = dict(width=128, heads=4, layers=2, patch_size=8)
  c.model.arch = args.get("arch", c.model.arch)
  return c
