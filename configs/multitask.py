r"""jina-style multi-task training (seed 000, METHODS §5): every step sums a text–text loss
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
from clipjax.errors import ConfigError
from clipjax.methods import method_config


def get_config(arg=None):
  args = parse_arg(arg, stage=1, arch="")
  if args.stage not in (1, 2, 3):
    raise ConfigError(f"multitask stage must be 1, 2 or 3, got {args.stage}")
  c = method_config("multitask")  # the text-pair stream, tau, retrieval evaluation
  c.stage = args.stage
  c.model.arch = args.arch
  c.total_steps = 300 if args.stage == 1 else 100
  c.optim.lr = 1e-3 if args.stage == 1 else 3e-4
  c.optim.warmup_steps = 30 if args.stage == 1 else 10
  c.data.num_negatives = 1 if args.stage == 3 else 0
  c.data.caption_field = "caption" if args.stage == 1 else "long_caption"
  c.model.context_length = 0 if args.stage == 1 else 128
  if args.stage > 1 and not args.arch:
    c.base = get_config(f"stage={args.stage - 1}")
    c.base.export.hf = False
  return c
