r"""jina-style multi-task training (seed 000, docs/methods.md §5): every step sums a text–text loss
(InfoNCE on text pairs, fixed τ = 0.05) and the CLIP loss on an image–caption batch; the two
streams have their own batch sizes.

  stage=1  text pairs + short captions
  stage=2  text pairs + long captions, text context 128 (positions interpolated from 77)
  stage=3  text triplets (InfoNCE+ with one hard negative per query) + long captions

  python -m clipjax.main --config=configs/multitask.py:stage=3

Each stage continues from the previous one: without model.checkpoint, stages 2 and 3 first
run (or reuse from the work dir's base/) the earlier stages on the synthetic data. With a real
architecture (`:stage=2,arch=ViT-B-32`) pass the previous stage's export as model.checkpoint.
"""
from clipjax.config import parse_arg
from clipjax.methods.multitask import stage_config


def get_config(arg=None):
  args = parse_arg(arg, stage=1, arch="")
  return stage_config(args.stage, args.arch)
