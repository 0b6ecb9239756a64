"""clipjax: OpenCLIP-exact CLIP towers in JAX/Flax, global-batch losses, and the methods of
our source documents. The public API is imported lazily so `import clipjax` stays cheap."""
from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import sys

__version__ = "0.1.0"


def _keep_jax_off_an_absent_tpu() -> None:
  """The test extra installs libtpu (compile-only TPU checks). On a machine with no TPU chip,
  jax still tries its TPU backend first, and libtpu prints initialisation errors (worker
  hostnames, accelerator type) before jax falls back to the CPU: a user reads that as broken.
  There — no Google TPU PCI device, no GPU, libtpu installed, and nobody chose the platforms —
  jax is told to use the CPU (`JAX_PLATFORMS=cpu`, inherited by worker processes)."""
  if os.environ.get("JAX_PLATFORMS") or "JAX_FORCE_TPU_INIT" in os.environ:
    return
  if importlib.util.find_spec("libtpu") is None:
    return
  if glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"):
    return  # a GPU: leave jax's platform choice alone
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor) as f:
        if f.read().strip() == "0x1ae0":  # Google: possibly a TPU chip; let jax look
          return
    except OSError:
      continue
  if "jax" in sys.modules:  # imported first: its backends may not be initialised yet
    sys.modules["jax"].config.update("jax_platforms", "cpu")
  os.environ["JAX_PLATFORMS"] = "cpu"


_keep_jax_off_an_absent_tpu()

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
