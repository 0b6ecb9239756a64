"""clipjax: OpenCLIP-exact CLIP towers in JAX/Flax, global-batch losses, and the methods of
our source documents. The public API is imported lazily so `import clipjax` stays cheap."""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "create_model": "clipjax.models",
    "list_models": "clipjax.models",
    "get_model_config": "clipjax.models",
    "load_openclip": "clipjax.convert.load",
    "create_model_and_transforms": "clipjax.convert.load",
    "list_pretrained": "clipjax.convert.pretrained",
    "export_openclip": "clipjax.convert.openclip",
    "export_hf": "clipjax.convert.hf",
    "get_tokenizer": "clipjax.models.tokenizers",
    "image_transform": "clipjax.data.transforms",
    "init_lora": "clipjax.models.lora",
    "merge_lora": "clipjax.models.lora",
}


def __getattr__(name: str):
  if name in _API:
    return getattr(importlib.import_module(_API[name]), name)
  raise AttributeError(f"module 'clipjax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_API))


__all__ = list(_API)
