r"""Evaluation of an OpenCLIP / clipjax checkpoint (`python -m clipjax.evaluate`).

Default: the embedded synthetic data (retrieval, zero-shot over its 64 classes, VQA multiple
choice), a tiny random model. Presets: `configs/eval.py:coco` (COCO captions from
`--config.eval.retrieval.source.annotations/image_root`), `:imagenet` / `:cifar10` (TFDS
array_record in `--config.eval.zeroshot.source.data_dir`, OpenAI's templates).
"""
import ml_collections


def synthetic(size: int, split: str = "eval") -> dict:
  return dict(kind="synthetic", size=size, resolution=64, seed=0, split=split)


def eval_block(size: int = 256) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      tasks="retrieval,zeroshot,vqa", batch_size=64, num_workers=2, betas=(1.0, 0.95, 0.9, 0.8, 0.6, 0.0),
      retrieval=dict(source=synthetic(size), text_field="caption"),
      zeroshot=dict(source=synthetic(size), classnames="source", templates="synthetic"),
      vqa=dict(source=synthetic(size, "vqa"))))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # checkpoint / adapted: any name clipjax.load_openclip takes (pretrained: the tag of an
  # architecture name); arch: empty = the checkpoint's own (ViT-S-16-tiny for random weights).
  config.model = dict(arch="", checkpoint="", pretrained="", adapted="", blend="embeddings")
  config.eval = eval_block()
  if arg == "coco":
    config.eval.retrieval.source = dict(kind="coco", annotations="", image_root="")
    config.eval.tasks = "retrieval"
  elif arg in ("imagenet", "cifar10"):
    name = {"imagenet": "imagenet2012", "cifar10": "cifar10"}[arg]
    config.eval.tasks = "zeroshot"
    config.eval.zeroshot = dict(
        source=dict(kind="tfds", name=name, split="validation" if arg == "imagenet" else "test",
                    data_dir=""),
        classnames={"imagenet": "imagenet1k", "cifar10": "cifar10"}[arg],
        templates={"imagenet": "imagenet1k", "cifar10": "cifar10"}[arg])
  elif arg:
    raise ValueError(f"unknown eval preset {arg!r}; use coco, imagenet or cifar10")
  return config
