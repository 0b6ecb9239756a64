"""Published weights by name, offline first, as open_clip names them.

`resolve(name, pretrained)` turns any of these into a local weights file plus what is known
about it (architecture, preprocessing):
- a local file (`.safetensors`, `.pt`, `.bin`, `.pth`);
- a directory, or `local-dir:DIR`, holding open_clip's `open_clip_config.json` and weights;
- `hf-hub:ORG/REPO`: the same files in a Hugging Face hub repository;
- an architecture with `pretrained=TAG` (open_clip's tag table, e.g. `("ViT-B-32",
  "laion2b_s34b_b79k")`) or with `pretrained=PATH`.
Hub files come from huggingface_hub's cache (`HF_HOME`, `HF_HUB_CACHE`); the network is asked
only when a file is missing from the cache, `HF_HUB_OFFLINE` is not set and the hub endpoint
(`HF_ENDPOINT`, or the proxy in `HTTPS_PROXY`) answers a connection within
`HUB_CONNECT_TIMEOUT` seconds, so a machine without network fails at once, not after
huggingface_hub's retries.
`open_clip_model.safetensors` is preferred over `open_clip_pytorch_model.bin`. A directory
holding a Hugging Face `CLIPModel` (`config.json` with model_type clip) is imported too.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.resources
import json
import os
import re
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from clipjax.convert.hf import config_from_hf
from clipjax.convert.hf_siglip_load import HF_SIGLIP_TYPES, config_from_hf_siglip
from clipjax.convert.io import CheckpointError
from clipjax.models.registry import MODEL_CONFIGS

CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")
# open_clip families clipjax does not implement, by architecture name.
_FAMILIES = (("SigLIP", r"siglip"), ("ConvNeXt", r"^convnext"), ("CoCa", r"^coca"),
             ("MobileCLIP's FastViT", r"^mobileclip"), ("timm (ViTamin)", r"^vitamin"))


@dataclasses.dataclass(frozen=True)
class Resolved:
  """A weights file and what its name says about it."""
  path: Path
  arch: Any = None          # a registry name or open_clip model-config dict; None: unknown
  preprocess: dict = dataclasses.field(default_factory=dict)  # mean/std/interpolation/...
  description: str = ""     # how the name was resolved, for messages and index records
  # or "hf": a transformers CLIPModel state dict (arch: its config); "hf_siglip": SiglipModel /
  # Siglip2Model
  format: str = "openclip"


@functools.lru_cache(maxsize=1)
def _table() -> dict:
  path = importlib.resources.files("clipjax.third_party") / "openclip_pretrained/pretrained.json"
  return json.loads(path.read_text())


def list_pretrained() -> list[tuple[str, str]]:
  """(architecture, tag) pairs clipjax can load by name, in open_clip's order."""
  return [(arch, tag) for arch, tags in _table()["tags"].items() for tag in tags]


def pretrained_cfg(arch: str, tag: str) -> dict:
  """open_clip's entry for a tag: hf_hub, quick_gelu, mean, std, interpolation, resize_mode."""
  tags = _table()["tags"]
  if arch not in tags:
    raise CheckpointError(_unknown_arch(arch))
  if tag not in tags[arch]:
    close = difflib.get_close_matches(tag, list(tags[arch]), n=1)
    raise CheckpointError(f"{arch} has no pretrained tag {tag!r}"
                          + (f" (did you mean {close[0]!r}?)" if close else "")
                          + f"; its tags: {', '.join(tags[arch])}")
  return dict(tags[arch][tag])


def _unknown_arch(arch: str) -> str:
  for family, pattern in _FAMILIES:
    if re.search(pattern, arch, re.I):
      return (f"{arch} is an open_clip {family} model; clipjax has no {family} towers yet "
              f"(architectures: clipjax.list_models())")
  if arch in _table()["unsupported_architectures"]:
    return f"{arch} is an open_clip architecture clipjax does not implement"
  if arch in MODEL_CONFIGS:
    return f"open_clip publishes no weights for {arch} (a clipjax test/demo architecture)"
  close = difflib.get_close_matches(arch, list(MODEL_CONFIGS), n=1)
  return (f"unknown model {arch!r}: not a file, directory, hf-hub: or local-dir: name, nor an "
          f"architecture" + (f" (did you mean {close[0]!r}?)" if close else ""))


HUB_CONNECT_TIMEOUT = 3.0


def _hub_address() -> tuple[str, int]:
  """The host and port a download connects to first: the proxy if one is set, else the hub."""
  from huggingface_hub import constants
  endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
  proxy = os.environ.get(f"{endpoint.scheme.upper()}_PROXY") or os.environ.get(
      f"{endpoint.scheme}_proxy")
  url = urllib.parse.urlsplit(proxy if proxy and "://" in proxy else
                              f"http://{proxy}" if proxy else constants.ENDPOINT)
  return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


@functools.lru_cache(maxsize=None)
def hub_reachable(address: tuple[str, int] | None = None) -> bool:
  """Whether a TCP connection to the hub (or its proxy) opens within HUB_CONNECT_TIMEOUT
  seconds, name lookup included (asked once per process)."""
  host, port = address or _hub_address()
  result: list[bool] = []

  def connect():
    try:
      socket.create_connection((host, port), timeout=HUB_CONNECT_TIMEOUT).close()
      result.append(True)
    except OSError:
      result.append(False)

  thread = threading.Thread(target=connect, daemon=True)  # bounds a hanging DNS lookup too
  thread.start()
  thread.join(HUB_CONNECT_TIMEOUT)
  return bool(result and result[0])


def _hub_file(repo: str, filename: str, cache_dir: str | None) -> str | None:
  """A file of a hub repo from the cache, else downloaded (unless offline or the hub cannot
  be reached); None if absent."""
  import huggingface_hub
  from huggingface_hub import constants
  cached = huggingface_hub.try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
  if isinstance(cached, str):
    return cached
  if constants.HF_HUB_OFFLINE or cached is not None or not hub_reachable():
    return None
  try:
    return huggingface_hub.hf_hub_download(repo, filename, cache_dir=cache_dir,
                                           etag_timeout=HUB_CONNECT_TIMEOUT)
  except Exception:  # not found, no network: the caller names what is missing
    return None


def _offline_hint(repo: str, cache_dir: str | None = None) -> str:
  from huggingface_hub import constants
  where = f"the Hugging Face cache ({cache_dir or constants.HF_HUB_CACHE})"
  if constants.HF_HUB_OFFLINE:
    return (f"{repo} is not in {where} and HF_HUB_OFFLINE is set; download it on a machine "
            f"with access (`hf download {repo}`) and copy the cache, or pass a local file")
  if not hub_reachable():
    return (f"{repo} is not in {where}, and the hub ({constants.ENDPOINT}) cannot be reached "
            f"(no connection within {HUB_CONNECT_TIMEOUT:g} s); copy the files into that cache "
            f"or pass a local file")
  return f"{repo} is not in {where} and could not be downloaded"


def _from_hub(repo: str, cache_dir: str | None, filename: str | None = None,
              with_config: bool = True) -> Resolved:
  config = None
  if with_config:
    config_path = _hub_file(repo, CONFIG_NAME, cache_dir)
    if config_path:
      config = json.loads(Path(config_path).read_text())
  if config is None and filename is None:  # a transformers repo (CLIPModel, SigLIP 1 / 2)
    hf_folder = _hf_hub_folder(repo, cache_dir)
    if hf_folder is not None:
      return _from_dir(hf_folder)
  for name in ([filename] if filename else WEIGHT_NAMES):
    path = _hub_file(repo, name, cache_dir)
    if path:
      return Resolved(Path(path), (config or {}).get("model_cfg"),
                      (config or {}).get("preprocess_cfg", {}), f"hf-hub:{repo}")
  looked = " or ".join([filename] if filename else (*WEIGHT_NAMES, "a transformers config.json"))
  raise CheckpointError(f"{_offline_hint(repo, cache_dir)} (looked for {looked})")


# what a transformers model folder needs besides config.json (tokenizer files when present)
_HF_FOLDER_FILES = ("model.safetensors", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "tokenizer.model", "preprocessor_config.json")


def _hf_hub_folder(repo: str, cache_dir: str | None) -> Path | None:
  """The cached snapshot folder of a transformers CLIP / SigLIP repo (its files fetched into
  it when they can be), or None when the repo has no such config.json."""
  config_path = _hub_file(repo, "config.json", cache_dir)
  if config_path is None:
    return None
  if json.loads(Path(config_path).read_text()).get("model_type") not in ("clip",
                                                                          *HF_SIGLIP_TYPES):
    return None
  for name in _HF_FOLDER_FILES:
    _hub_file(repo, name, cache_dir)
  return Path(config_path).parent


def _from_hf_dir(directory: Path, config: dict) -> Resolved:
  """A transformers CLIPModel folder (config.json + model.safetensors / pytorch_model.bin)."""
  for name in ("model.safetensors", "pytorch_model.bin"):
    if (directory / name).is_file():
      return Resolved(directory / name, config_from_hf(config), {}, f"{directory} (HF CLIPModel)",
                      format="hf")
  raise CheckpointError(f"{directory} holds a CLIPModel config.json but no model.safetensors "
                        f"or pytorch_model.bin")


def _from_hf_siglip_dir(directory: Path, config: dict) -> Resolved:
  """A transformers SiglipModel / Siglip2Model folder (NaFlex or fixed resolution)."""
  for name in ("model.safetensors", "pytorch_model.bin"):
    if (directory / name).is_file():
      kind = "Siglip2Model" if config["model_type"] == "siglip2" else "SiglipModel"
      return Resolved(directory / name, config_from_hf_siglip(config, directory), {},
                      f"{directory} (HF {kind})", format="hf_siglip")
  raise CheckpointError(f"{directory} holds a SigLIP config.json but no model.safetensors "
                        f"or pytorch_model.bin")


def _from_dir(directory: Path) -> Resolved:
  if not directory.is_dir():
    raise CheckpointError(f"local-dir:{directory} is not a directory")
  hf_config = directory / "config.json"
  if not (directory / CONFIG_NAME).is_file() and hf_config.is_file():
    config = json.loads(hf_config.read_text())
    if config.get("model_type") == "clip":
      return _from_hf_dir(directory, config)
    if config.get("model_type") in HF_SIGLIP_TYPES:
      return _from_hf_siglip_dir(directory, config)
  config_path = directory / CONFIG_NAME
  config = json.loads(config_path.read_text()) if config_path.is_file() else {}
  for name in WEIGHT_NAMES:
    if (directory / name).is_file():
      return Resolved(directory / name, config.get("model_cfg"), config.get("preprocess_cfg", {}),
                      f"local-dir:{directory}")
  raise CheckpointError(f"{directory} holds no {' or '.join(WEIGHT_NAMES)}")


def resolve(name: str | os.PathLike, pretrained: str | os.PathLike | None = None, *,
            cache_dir: str | None = None) -> Resolved:
  """See the module docstring. Raises CheckpointError naming what could not be found."""
  name = str(name)
  if name.startswith("hf-hub:"):
    return _from_hub(name[len("hf-hub:"):].strip("/"), cache_dir)
  if name.startswith("local-dir:"):
    return _from_dir(Path(name[len("local-dir:"):]).expanduser())
  path = Path(name).expanduser()
  if path.is_dir():
    return _from_dir(path)
  if path.suffix in _SUFFIXES or os.sep in name:
    if not path.is_file():
      raise CheckpointError(f"checkpoint {name} does not exist")
    return Resolved(path, None, {}, str(path))
  # An architecture name: its weights come from `pretrained`.
  if pretrained is None:
    tags = ", ".join(_table()["tags"].get(name, {}))
    raise CheckpointError(f"{name} is an architecture: give pretrained=TAG (one of {tags}) or "
                          f"pretrained=PATH" if tags else _unknown_arch(name))
  pretrained = str(pretrained)
  if Path(pretrained).expanduser().is_file():
    return Resolved(Path(pretrained).expanduser(), name, {}, pretrained)
  if os.sep in pretrained or Path(pretrained).suffix in _SUFFIXES:
    raise CheckpointError(f"pretrained={pretrained} does not exist")
  cfg = pretrained_cfg(name, pretrained)
  repo_id, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" or "org/repo/file"
  arch = name
  if cfg.get("quick_gelu") and not name.endswith("-quickgelu"):
    if f"{name}-quickgelu" in MODEL_CONFIGS:
      arch = f"{name}-quickgelu"  # the weights were trained with QuickGELU
  try:
    hub = _from_hub(repo_id, cache_dir, filename or None, with_config=False)
  except CheckpointError as e:  # name the tag the user typed, not only its hub repository
    raise CheckpointError(f"{name} pretrained={pretrained}: {e}") from None
  preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
  return Resolved(hub.path, arch, preprocess, f"{name} pretrained={pretrained} ({hub.description})")
