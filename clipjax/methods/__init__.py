"""Training methods, registered by name (`config.method`); one file per method.

`get_method(name)` returns the registered `Method`; `register` adds one (see
docs/architecture.md). Importing this package registers the built-in methods.
"""
from clipjax.methods import (  # noqa: F401
  clip,
  distill,
  draft,
  lit,
  mult,
  multitask,
  siglip,
  three_tower,
  unicl,
)
from clipjax.methods.base import (
  Method,
  get_method,
  method_config,
  method_names,
  pretrained_clip_base,
  register,
  run_options,
)
from clipjax.methods.context import Context, Evaluation, Objective
from clipjax.methods.layout import MOVED_FIELDS, check_layout, moved_field

__all__ = ["Context", "Evaluation", "MOVED_FIELDS", "Method", "Objective", "check_layout",
           "get_method", "method_config", "method_names", "moved_field",
           "pretrained_clip_base", "register", "run_options"]
