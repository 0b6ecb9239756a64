r"""Distillation (open_clip's DistillClipLoss, docs/methods.md §7c): a student trained with the
CLIP loss plus the cross-entropy of its logits to a frozen teacher's.

  python -m clipjax.main --config=configs/distill.py:arch=ViT-B-32 \
      --config.distill.teacher=ViT-L-14 --config.distill.teacher_pretrained=laion2b_s32b_b82k \
      --config.data.train='wds:shards=data/{00000..00331}.tar'

The teacher reads the student's batch: the same image size and tokenizer (the OpenAI / LAION
CLIP family shares the BPE and the 77-token context). Any other teacher (a SigLIP, another
resolution): --config.distill.cached=True embeds each training image and caption once with
the teacher's own preprocessing and tokenizer (needs data.augment=False).
"""
from clipjax.config import parse_arg
from clipjax.methods import method_config


def get_config(arg=None):
  args = parse_arg(arg, arch="")
  c = method_config("distill")
  c.optim.lr = 1e-3
  c.model.arch = args.arch
  return c
