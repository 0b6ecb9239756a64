r"""DRAFT (seed 001 §4.4, METHODS §3): frozen image tower, the text tower trained on captions
and dialogue (one QA pair per sample) with the contrastive loss (a = 0.65) + RBF-kernel MMD.

  python -m clipjax.main --config=configs/draft.py
  python -m clipjax.main --config=configs/draft.py:arch=ViT-B-32 \
      --config.model.checkpoint=open_clip_model.safetensors --config.data.train.kind=... 

Without a checkpoint a small base CLIP is first pretrained on the synthetic captions (or reused
from the work dir), then adapted; the evaluation prints base, DRAFT and the DRAFT + base
embedding blend side by side, and the WiSE-FT weight blend (β = export.wise_beta) is exported.
"""
from clipjax.config import parse_arg
from clipjax.methods import method_config


def get_config(arg=None):
  args = parse_arg(arg, arch="")
  c = method_config("draft")  # freeze rules, loss.a, dialogue mode, the base CLIP
  c.total_steps = 80
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 10
  if args.arch:
    c.model.arch = args.arch
    c.base = None  # real architectures start from an OpenCLIP checkpoint
  return c
