r"""Evaluation of an OpenCLIP / clipjax checkpoint (`python -m clipjax.evaluate`).

Default: the embedded synthetic data (retrieval, zero-shot over its 64 classes, VQA multiple
choice), a tiny random model. Presets: `configs/eval.py:coco` (COCO captions from
`--config.eval.retrieval.source.annotations/image_root`), `:imagenet` / `:cifar10` (TFDS
array_record in `--config.eval.zeroshot.source.data_dir`, OpenAI's templates).
"""
import ml_collections

from clipjax.config import parse_arg
from clipjax.errors import ConfigError
from clipjax.evaluate.tasks import eval_block


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = parse_arg(arg, coco=False, imagenet=False, cifar10=False)
  config = ml_collections.ConfigDict()
  # checkpoint / adapted: any name clipjax.load_openclip takes (pretrained: the tag of an
  # architecture name); arch: empty = the checkpoint's own (ViT-S-16-tiny for random weights).
  # max_num_patches: a NaFlex model's sequence lengths, e.g. "(64, 256)": one row per length.
  config.model = dict(arch="", checkpoint="", pretrained="", adapted="", blend="embeddings",
                      max_num_patches=())
  config.eval = eval_block()
  if sum(preset.values()) > 1:
    raise ConfigError(f"choose one eval preset of coco, imagenet, cifar10, got {arg!r}")
  if preset.coco:
    config.eval.retrieval.source = dict(kind="coco", annotations="", image_root="")
    config.eval.tasks = "retrieval"
  for name in ("imagenet", "cifar10"):
    if preset[name]:
      tfds_name = {"imagenet": "imagenet2012", "cifar10": "cifar10"}[name]
      config.eval.tasks = "zeroshot"
      config.eval.zeroshot = dict(
          source=dict(kind="tfds", name=tfds_name,
                      split="validation" if name == "imagenet" else "test", data_dir=""),
          classnames={"imagenet": "imagenet1k", "cifar10": "cifar10"}[name],
          templates={"imagenet": "imagenet1k", "cifar10": "cifar10"}[name])
  return config
