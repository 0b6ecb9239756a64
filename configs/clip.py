r"""CLIP (docs/methods.md §1): symmetric InfoNCE over the global batch with a learnable logit scale.

  python -m clipjax.main --config=configs/clip.py                # from scratch, synthetic data
  python -m clipjax.main --config=configs/clip.py:arch=ViT-B-32 \
      --config.model.checkpoint=open_clip_model.safetensors --config.optim.lr=1e-5   # fine-tune
"""
from clipjax.config import parse_arg
from clipjax.methods import method_config


def get_config(arg=None):
  args = parse_arg(arg, arch="")
  c = method_config("clip")
  c.optim.lr = 1e-3
  c.total_steps = 300
  c.clip.same_image_positives = False  # true: captions of the same image are positives
  c.model.arch = args.arch
  return c
