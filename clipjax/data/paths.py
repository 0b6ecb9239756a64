"""File specs of data sources: `~` and `$VAR` expansion, shell-style brace ranges and lists
(`shards/{00000..01023}.tar`, `{train,extra}.jsonl`) expanded by clipjax itself, then globs.

A shell expands an unquoted brace range into several arguments before clipjax sees it, so specs
are written quoted (docs/data.md); `clipjax.cli` refuses a source flag given twice, which is
what an unquoted range becomes.
"""
from __future__ import annotations

import glob
import os
import re

from etils import epath

from clipjax.errors import ConfigError

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_GLOB_CHARS = re.compile(r"[*?\[]")


def expand_user(path: str) -> str:
  """`~`, `~user` and `$VAR` / `${VAR}` expanded (URLs such as gs://... pass unchanged)."""
  return os.path.expandvars(os.path.expanduser(str(path)))


def _closing_brace(text: str, start: int) -> int:
  depth = 0
  for i in range(start, len(text)):
    depth += {"{": 1, "}": -1}.get(text[i], 0)
    if depth == 0:
      return i
  return -1


def split_outside_braces(text: str, sep: str = ",") -> list[str]:
  """`text` split at `sep` outside braces."""
  parts, depth, current = [], 0, []
  for ch in text:
    depth += {"{": 1, "}": -1}.get(ch, 0)
    if ch == sep and depth == 0:
      parts.append("".join(current))
      current = []
    else:
      current.append(ch)
  parts.append("".join(current))
  return parts


def expand_braces(pattern: str) -> list[str]:
  """Every expansion of the first brace group, recursively, in order: `{a,b}` lists and
  `{00000..00003}` integer ranges (zero-padded to the wider end). A brace without a list or
  range stays literal, as in bash."""
  start = pattern.find("{")
  while start >= 0:
    end = _closing_brace(pattern, start)
    if end < 0:
      return [pattern]
    body, head, tail = pattern[start + 1:end], pattern[:start], pattern[end + 1:]
    match = _RANGE.match(body)
    if match:
      a, b = int(match.group(1)), int(match.group(2))
      width = max(len(match.group(1)), len(match.group(2)))
      step = 1 if b >= a else -1
      options = [f"{i:0{width}d}" for i in range(a, b + step, step)]
    elif "," in body:
      options = [o for part in split_outside_braces(body) for o in expand_braces(part)]
    else:
      start = pattern.find("{", start + 1)
      continue
    return [out for option in options for out in expand_braces(head + option + tail)]
  return [pattern]


def resolve_files(spec: str, what: str) -> list[str]:
  """The files a spec names, sorted within each brace expansion, in expansion order: braces,
  then globs. A spec that matches no file, or a brace-expanded name (without glob characters)
  that does not exist, is a ConfigError naming `what`, the spec and the missing names."""
  files, missing = [], []
  for pattern in expand_braces(expand_user(spec)):
    if _GLOB_CHARS.search(pattern):
      matches = (sorted(str(p) for p in epath.Path(pattern).parent.glob(epath.Path(pattern).name))
                 if "://" in pattern else sorted(glob.glob(pattern)))
      files.extend(m for m in matches if not os.path.isdir(m))
    elif epath.Path(pattern).exists():
      files.append(pattern)
    else:
      missing.append(pattern)
  if missing and files:
    raise ConfigError(f"{what}={spec}: {len(missing)} of the files it names do not exist "
                      f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
  if not files:
    raise ConfigError(f"{what}={spec} matches no files")
  return files
