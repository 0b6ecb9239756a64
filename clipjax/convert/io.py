"""Reading and writing checkpoint files as data: safetensors, or torch files loaded with
`weights_only=True` (a pickle that would run code is refused). Writes go to a temporary file
in the destination folder and are renamed into place, so a failed write leaves no partial file.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Mapping

import numpy as np

from clipjax.errors import UserError
from clipjax.files import atomic_path, staged_files


class CheckpointError(UserError, ValueError):
  """A checkpoint file that cannot be used: unreadable, unsafe, or not matching the model."""


def _torch():
  try:
    import torch
  except ImportError:
    raise CheckpointError("reading or writing .pt/.bin files needs PyTorch (pip install "
                          "'clipjax[torch]'); .safetensors files need only the base install") from None
  return torch


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads an OpenCLIP checkpoint into {torch key: float32/int numpy array}.

  Accepts `.safetensors`, or a torch `.pt`/`.bin`/`.pth` holding a raw state_dict or an
  open_clip training checkpoint (`{"state_dict": ..., "epoch": ...}`); strips the `module.`
  prefix that DistributedDataParallel adds.
  """
  path = Path(path)
  if not path.is_file():
    raise CheckpointError(f"checkpoint {path} does not exist")
  if path.suffix == ".safetensors":
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
      sd = load_file(str(path))
    except (SafetensorError, OSError) as e:
      raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                            f"{e}") from e
    except TypeError as e:  # bfloat16 tensors cannot be represented in numpy
      sd = _load_safetensors_via_torch(path, e)
  elif path.suffix in (".pt", ".bin", ".pth"):
    sd = _load_torch_file(path)
  else:
    raise CheckpointError(f"{path}: unknown checkpoint type {path.suffix!r}; expected "
                          ".safetensors, .pt, .bin or .pth")
  if any(k.startswith("module.") for k in sd):
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
  return sd


def _load_safetensors_via_torch(path: Path, cause: Exception) -> dict[str, np.ndarray]:
  torch = _torch()
  from safetensors.torch import load_file
  del cause
  return {k: _to_numpy(torch, v) for k, v in load_file(str(path)).items()}


def _to_numpy(torch, value) -> np.ndarray:
  if value.dtype in (torch.bfloat16, torch.float16):
    value = value.float()
  return value.detach().cpu().numpy()


def _load_torch_file(path: Path) -> dict[str, np.ndarray]:
  torch = _torch()
  try:
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    raise CheckpointError(
        f"refusing to load {path}: its pickle references objects other than tensors and plain "
        f"containers, so loading it could run code. clipjax loads checkpoints as data only "
        f"(torch.load(weights_only=True)). Details: {str(e).splitlines()[0]}") from e
  except (RuntimeError, EOFError, OSError) as e:
    raise CheckpointError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): "
                          f"{e}") from e
  if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
    raise CheckpointError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
  return {k: _to_numpy(torch, v) for k, v in obj.items()}


def save_state_dict(sd: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
  """Writes {key: array} as `.safetensors`, or as a torch `.pt`/`.bin` state_dict, atomically."""
  path = Path(path)
  arrays = {k: np.array(v, order="C") for k, v in sd.items()}
  if path.suffix == ".safetensors":
    from safetensors.numpy import save_file
    with atomic_path(path) as tmp:
      save_file(arrays, tmp)
  elif path.suffix in (".pt", ".bin", ".pth"):
    torch = _torch()
    with atomic_path(path) as tmp:
      torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, tmp)
  else:
    raise CheckpointError(f"{path}: unknown output type {path.suffix!r}; use .safetensors or .pt")


def save_hf_dir(tensors: Mapping[str, np.ndarray], config, out_dir: str | os.PathLike,
                processor=None) -> Path:
  """Writes `model.safetensors`, `config.json` (a transformers config object) and, given a
  transformers processor, its files into `out_dir`: all are written in a temporary folder there
  and renamed into place one by one, weights first, so an interrupted export never leaves a
  truncated file."""
  from safetensors.numpy import save_file
  with staged_files(out_dir, first=("model.safetensors", "config.json")) as tmp:
    save_file(dict(tensors), os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(tmp)
    if processor is not None:
      processor.save_pretrained(tmp)
  return Path(out_dir)
