"""What the config files in configs/ share: the argument parser and the ConfigDict of the fields
every run reads (each defined and documented once, in `clipjax.options`). A method's own
settings are its block `config.<method>`, added with its defaults by
`clipjax.methods.method_config`."""
from __future__ import annotations

import difflib
from typing import Any

import ml_collections

from clipjax.errors import ConfigError
from clipjax.evaluate.tasks import eval_block
from clipjax.options import BLOCKS, RunOptions, block_defaults

# The architecture of runs from scratch when model.arch is empty (a checkpoint brings its own).
DEFAULT_ARCH = "ViT-S-16-tiny"


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """The `configs/x.py:k=v,flag` argument: each value cast to its default's type, a bare name
  sets a bool default to True; an unknown name is a ConfigError listing the known ones."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, has_value, value = item.partition("=")
    if key not in defaults:
      close = difflib.get_close_matches(key, list(defaults), n=1)
      raise ConfigError(f"config argument {key!r} is not one of {sorted(defaults)}"
                        + (f" (did you mean {close[0]!r}?)" if close else ""))
    kind = type(defaults[key])
    if not has_value:
      if kind is not bool:
        raise ConfigError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    elif kind is bool:
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      try:
        out[key] = kind(value)
      except ValueError:
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        raise ConfigError(f"config argument {key}={value!r} is not {article} {kind.__name__}"
                          ) from None
  return out


def base_config(method: str) -> ml_collections.ConfigDict:
  """The ConfigDict of a run of `method` with every shared field at its default; the fields
  and their meaning are `clipjax.options.RunOptions` and its blocks'."""
  c = ml_collections.ConfigDict()
  c.method = method  # a registered method: clipjax.methods.method_names()
  top = RunOptions(method)
  for name in ("seed", "batch_size", "total_steps", "log_every", "freeze"):
    c[name] = getattr(top, name)
  for name, kind in BLOCKS.items():
    c[name] = block_defaults(kind)
  c.eval = eval_block()
  c.base = None  # the config of a base model trained first when there is no checkpoint
  return c


def adaptation_run(c: ml_collections.ConfigDict, arch: str = "") -> ml_collections.ConfigDict:
  """A short, low learning-rate run adapting a pretrained CLIP (draft, three_tower). With a
  real architecture the weights come from model.checkpoint, so no base is pretrained."""
  c.total_steps = 80
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 10
  if arch:
    c.model.arch = arch
    c.base = None
  return c


def choice(name: str, value: Any, choices) -> None:
  """ConfigError naming the field, the choices and the closest one, for a value not in them."""
  if value not in choices:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    raise ConfigError(f"{name}={value!r} is not one of {list(choices)}"
                      + (f" (did you mean {close[0]!r}?)" if close else ""))
