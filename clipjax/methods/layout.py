"""The previous config layout (every method's settings in every run, clipjax before issue 26):
where each of its fields is now, as a one-line error for a config or command line that uses
one."""
from __future__ import annotations

import ml_collections

from clipjax.errors import ConfigError
from clipjax.methods.base import get_method, method_names

# old dotted field -> its name in the block of the methods that read it.
MOVED_FIELDS = {"loss.a": "a", "loss.b": "b", "loss.mmd_weight": "mmd_weight",
                "loss.mmd": "mmd", "loss.tau": "tau", "loss.mult": "tower",
                "loss.bidirectional": "bidirectional", "loss.form": "form",
                "loss.same_image_positives": "same_image_positives",
                "data.dialogue_mode": "dialogue_mode"}


def moved_field(field: str, method: str | None = None) -> tuple[str, str | None] | None:
  """For a dotted field of the previous layout (or below one): a one-line message saying where
  it is now, and its new dotted name in `method`'s block (None: that method has no such
  setting). None for any other field."""
  old = next((k for k in MOVED_FIELDS if field == k or field.startswith(k + ".")), None)
  if old is None:
    return None
  rest = MOVED_FIELDS[old] + field[len(old):]
  owners = [n for n in method_names() if MOVED_FIELDS[old] in get_method(n).settings]
  if method in owners:
    return (f"{field} is now {method}.{rest} (each method's settings are in its own block, "
            f"config.<method>; docs/training.md)", f"{method}.{rest}")
  where = ", ".join(f"{n}.{rest}" for n in owners)
  return (f"{field} is now a method's own setting ({where})"
          + (f"; method {method} has none" if method else ""), None)


def where_now(field: str, method: str | None = None) -> str | None:
  """`moved_field`'s message alone (None for a field of the current layout): the command
  line's hint for `--config.FIELD` (`cli.run(field_hint=...)`)."""
  moved = moved_field(field, method)
  return moved and moved[0]


def check_layout(cfg: ml_collections.ConfigDict) -> None:
  """ConfigError naming the new field for a config written for the previous layout."""
  for old in MOVED_FIELDS:
    parent, _, leaf = old.rpartition(".")
    if leaf in (cfg.get(parent) or {}):
      raise ConfigError(moved_field(old, cfg.get("method"))[0])
