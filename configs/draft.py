r"""DRAFT (seed 001 §4.4, methods.md §3): frozen image tower, the text tower trained on captions
and dialogue (one QA pair per sample) with the contrastive loss (a = 0.65) + RBF-kernel MMD.

  python -m clipjax.main --config=configs/draft.py
  python -m clipjax.main --config=configs/draft.py:arch=ViT-B-32 \
      --config.model.checkpoint=open_clip_model.safetensors --config.data.train.kind=... 

Without a checkpoint a small base CLIP is first pretrained on the synthetic captions (or reused
from the work dir), then adapted; the evaluation prints base, DRAFT and the DRAFT + base
embedding blend side by side, and the WiSE-FT weight blend (β = export.wise_beta) is exported.
"""
from clipjax.config import adaptation_run, parse_arg
from clipjax.methods import method_config


def get_config(arg=None):
  args = parse_arg(arg, arch="")
  # freeze rules, draft.* and the base CLIP come from the method
  return adaptation_run(method_config("draft"), args.arch)
