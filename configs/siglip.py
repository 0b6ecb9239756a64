r"""SigLIP (methods.md §7): pairwise sigmoid loss, t = exp(t') with t' init log 10, bias init −10.

  python -m clipjax.main --config=configs/siglip.py                  # from scratch, synthetic
  python -m clipjax.main --config=configs/siglip.py:arch=ViT-B-16-SigLIP2 \
      --config.data.train=manifest:manifest=data/train.jsonl,image_root=data    # fine-tune

A SigLIP / SigLIP 2 architecture with open_clip weights fine-tunes them: model.checkpoint and
model.pretrained default to the architecture and its first tag (`webli`; from the HF cache or
hub), or a local file with --config.model.pretrained=PATH. The model keeps its own logit scale
and bias, trained with the towers at a fine-tuning learning rate.
"""
from clipjax.config import parse_arg
from clipjax.convert.pretrained import list_pretrained
from clipjax.methods import method_config
from clipjax.models.configs import TimmViTConfig
from clipjax.models.registry import MODEL_CONFIGS


def get_config(arg=None):
  args = parse_arg(arg, arch="")
  c = method_config("siglip")
  c.optim.lr = 1e-3
  c.model.arch = args.arch
  tags = [tag for name, tag in list_pretrained() if name == args.arch]
  if tags and isinstance(MODEL_CONFIGS[args.arch].vision, TimmViTConfig):
    c.model.checkpoint, c.model.pretrained = args.arch, tags[0]
    c.optim.lr, c.optim.weight_decay = 1e-5, 0.1
  return c
