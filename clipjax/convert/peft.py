"""LoRA adapters (clipjax/models/lora.py) as a Hugging Face PEFT adapter folder.

`adapter_config.json` + `adapter_model.safetensors`, targeting the `CLIPModel` / `SiglipModel`
Linear modules of our HF export, so that

  peft.PeftModel.from_pretrained(CLIPModel.from_pretrained(<the base's HF export>), folder)

computes what the merged export computes. PEFT's LoRA adds scale · B A x to a Linear with
weight [out, in] (lora_A [r, in], lora_B [out, r], scale = lora_alpha / r); ours adds
x · scale · A B to a kernel [in, out]. So lora_A = Aᵀ and lora_B = Bᵀ, per q / k / v slice of a
fused projection. The names come from the same tensor mapping the weight export uses: A and B
are packed as kernel-shaped tensors ([in, S·r] and [r, S·out/S]) and sent through it, which
transposes them and splits a fused projection into its q / k / v modules.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from clipjax.convert.hf import hf_export_refusal, state_dict_to_hf
from clipjax.convert.hf_siglip import siglip_tensors_to_hf
from clipjax.convert.io import CheckpointError
from clipjax.convert.openclip import params_to_state_dict
from clipjax.files import staged_files
from clipjax.models.configs import CLIPConfig, TimmViTConfig
from clipjax.models.naming import unflatten

PREFIX = "base_model.model."  # a PeftModel's path to the wrapped CLIPModel / SiglipModel


def _packed(x: np.ndarray) -> np.ndarray:
  """[..., S, m, n] -> [..., m, S·n]: the S slices side by side along the output axis."""
  x = np.moveaxis(np.asarray(x, np.float32), -3, -2)
  return x.reshape(*x.shape[:-2], -1)


def _to_hf(path: str, tensor: np.ndarray, cfg: CLIPConfig) -> dict[str, np.ndarray]:
  """The HF tensors a kernel-shaped tensor at clipjax path `path` ("clip.visual....") becomes."""
  keys = tuple(path.split("."))[1:]  # below "clip"
  sd = params_to_state_dict(unflatten({keys: tensor}))
  if isinstance(cfg.vision, TimmViTConfig):
    return siglip_tensors_to_hf(sd)
  return state_dict_to_hf(sd)


def _linear_module(hf_key: str, path: str) -> str:
  """The Linear module name of HF weight `hf_key` (PEFT adapts Linear layers only)."""
  if not hf_key.endswith(".weight") or "embedding" in hf_key or ".head.attention." in hf_key:
    raise CheckpointError(
        f"the LoRA adapter on {path} becomes HF tensor {hf_key}, which is not the weight of a "
        f"Linear layer PEFT can adapt; export the merged model instead (lora.targets)")
  return hf_key[:-len(".weight")]


def peft_tensors(adapters: dict, cfg: CLIPConfig) -> dict[str, np.ndarray]:
  """{"base_model.model.<module>.lora_A.weight": [r, in], "....lora_B.weight": [out, r]} of
  the adapters of CLIP params with architecture `cfg`."""
  refusal = hf_export_refusal(cfg)  # the adapters need an HF base model to load into
  if refusal:
    raise CheckpointError(refusal)
  out = {}
  for path, adapter in adapters.items():
    a = _to_hf(path, _packed(adapter["a"]), cfg)
    b = _to_hf(path, _packed(adapter["b"]), cfg)
    if not a or a.keys() != b.keys():
      raise CheckpointError(f"the LoRA adapter on {path} has no Hugging Face module")
    for key in a:
      module = _linear_module(key, path)
      out[f"{PREFIX}{module}.lora_A.weight"] = np.array(a[key], order="C")
      out[f"{PREFIX}{module}.lora_B.weight"] = np.array(b[key], order="C")
  return out


def export_peft(adapters: dict, cfg: CLIPConfig, out_dir: str | os.PathLike, *, rank: int,
                alpha: float, dropout: float = 0.0, base: str = "") -> Path:
  """Writes `adapter_model.safetensors` and `adapter_config.json` into `out_dir` (staged,
  weights first, like every export). `base`: what `base_model_name_or_path` names."""
  from safetensors.numpy import save_file
  tensors = peft_tensors(adapters, cfg)
  modules = sorted({k[len(PREFIX):].rsplit(".", 2)[0] for k in tensors})
  config = {"peft_type": "LORA", "task_type": None, "r": int(rank), "lora_alpha": float(alpha),
            "lora_dropout": float(dropout), "target_modules": modules, "bias": "none",
            "fan_in_fan_out": False, "use_rslora": False, "init_lora_weights": True,
            "inference_mode": True, "modules_to_save": None,
            "base_model_name_or_path": base or None}
  with staged_files(out_dir, first=("adapter_model.safetensors",)) as tmp:
    save_file(tensors, os.path.join(tmp, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
      json.dump(config, f, indent=2)
  return Path(out_dir)
