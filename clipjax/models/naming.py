"""Parameter paths and their open_clip names: one place for the path strings that freezing,
sharding and weight decay match regexes against, and for the Flax path -> open_clip key rule
that conversion and open_clip's weight-decay exclusions both follow."""
from __future__ import annotations

import re
from typing import Any

import jax


def path_keys(path: tuple) -> tuple[str, ...]:
  """A jax key path -> its plain string keys."""
  return tuple(str(getattr(k, "key", k)) for k in path)


def path_string(path: tuple) -> str:
  """A jax key path -> "visual/transformer/resblocks_0/ln_1/scale"."""
  return "/".join(path_keys(path))


def param_paths(params: Any) -> Any:
  """The tree of "/"-joined path strings, same structure as params."""
  return jax.tree_util.tree_map_with_path(lambda p, _: path_string(p), params)


def flatten(tree: Any) -> dict[tuple[str, ...], Any]:
  """{path keys: leaf} of a nested dict."""
  return {path_keys(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def unflatten(flat: dict[tuple[str, ...], Any]) -> dict:
  """Inverse of `flatten`."""
  out: dict = {}
  for path, v in flat.items():
    node = out
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = v
  return out


def torch_key(path: tuple[str, ...]) -> tuple[str, str]:
  """Flax param path -> (open_clip key, kind), kind in {'linear', 'conv', 'plain'}.

  `/` becomes `.`, numbered submodules `resblocks_3` become `resblocks.3` (likewise ResNet
  `layer2_0`, `downsample_1`, HF text towers `layer_3`, `block_0`, `layers_3`, `proj_2`, timm trunks
  `blocks_0`, a hybrid stem's `backbone_0`), Dense and Conv
  `kernel` and LayerNorm `scale` / Embed `embedding` are `weight`, and the fused attention
  input projection is `in_proj_weight` / `in_proj_bias`."""
  *mods, leaf = path
  names = [re.sub(r"^(resblocks|layers|layer\d?|downsample|blocks?|proj|backbone)_(\d+)$",
                  r"\1.\2", m)
           for m in mods]
  if mods and mods[-1] == "in_proj":
    return ".".join(names[:-1] + [f"in_proj_{'weight' if leaf == 'kernel' else 'bias'}"]), \
        "linear" if leaf == "kernel" else "plain"
  if leaf == "kernel":
    conv = re.fullmatch(r"conv\d?|downsample_0", mods[-1]) or mods[-2:] == ["patch_embed", "proj"]
    return ".".join(names + ["weight"]), "conv" if conv else "linear"
  if leaf in ("scale", "embedding"):
    return ".".join(names + ["weight"]), "plain"
  return ".".join(names + [leaf]), "plain"
