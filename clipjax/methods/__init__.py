"""Training methods, registered by name (`config.method`); one file per method.

`get_method(name)` returns the registered `Method`; `register` adds one (see
docs/architecture.md). Importing this package registers the built-in methods.
"""
from clipjax.methods import (  # noqa: F401
  clip,
  draft,
  lit,
  mult,
  multitask,
  siglip,
  three_tower,
  unicl,
)
from clipjax.methods.base import (
  Context,
  Evaluation,
  Method,
  Objective,
  get_method,
  method_config,
  method_names,
  pretrained_clip_base,
  register,
)

__all__ = ["Context", "Evaluation", "Method", "Objective", "get_method", "method_config",
           "method_names", "pretrained_clip_base", "register"]
