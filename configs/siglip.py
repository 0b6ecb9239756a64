r"""SigLIP (methods.md §7): pairwise sigmoid loss, t = exp(t') with t' init log 10, bias init −10.

  python -m clipjax.main --config=configs/siglip.py                  # from scratch, synthetic
  python -m clipjax.main --config=configs/siglip.py:arch=ViT-B-16-SigLIP2 \
      --config.data.train=manifest:manifest=data/train.jsonl,image_root=data    # fine-tune
  python -m clipjax.main --config=configs/siglip.py:arch=ViT-B-16-SigLIP2-NaFlex \
      --config.data.train=...   # NaFlex: native aspect ratios, batches of 128 or 256 patches

A SigLIP / SigLIP 2 architecture with open_clip weights fine-tunes them: model.checkpoint and
model.pretrained default to the architecture and its first tag (`webli`; from the HF cache or
hub), or a local file with --config.model.pretrained=PATH. The model keeps its own logit scale
and bias, trained with the towers at a fine-tuning learning rate. A NaFlex architecture starts
from transformers' folder (`hf-hub:google/siglip2-base-patch16-naflex`, or any folder with
--config.model.checkpoint=DIR) and batches by sequence length (`data.naflex`).
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
  vision = MODEL_CONFIGS[args.arch].vision if args.arch in MODEL_CONFIGS else None
  if tags and isinstance(vision, TimmViTConfig):
    c.model.checkpoint, c.model.pretrained = args.arch, tags[0]
    c.optim.lr, c.optim.weight_decay = 1e-5, 0.1
  elif getattr(vision, "naflex", False):
    # NaFlex: sequences of 256 patches or fewer, batches sized by patches (data.naflex)
    c.data.naflex.lengths = (128, 256)
    repo = MODEL_CONFIGS[args.arch].text.hf_tokenizer_name
    if repo:  # the published weights: transformers' folder, from the HF cache or hub
      c.model.checkpoint = f"hf-hub:{repo}"
      c.optim.lr, c.optim.weight_decay = 1e-5, 0.1
  return c
