"""What every clipjax command line shares, following absl / ml_collections conventions.

- Data source fields take spec strings (`--config.data.train=manifest:manifest=a.jsonl`) or
  JSON dicts; they are rewritten into the dict literal ml_collections parses for a ConfigDict.
  A source field given twice is refused: it is what a shell makes of an unquoted brace range.
- Path flags (`--workdir=~/runs/x`, `--index=$DATA/photos`, ...) expand `~` and `$VAR`.
- `--help` (`-h`, `--helpshort`, `--helpfull`) prints the command's usage and flags, and with
  `--config=FILE` every field of that config with its value, and exits 0.
- A flag or config error (unknown field, bad value, missing config file) and every `UserError`
  raised while running is one line on stderr and exit status 2, never a traceback.
- Ctrl-C outside the training loop (which saves first) is one line and exit status 130.
- On CPU-only machines the backend probe and faiss loader lines stay out of the output.
"""
from __future__ import annotations

import json
import logging as py_logging
import os
import re
import sys
from typing import Callable, Sequence

from absl import app, flags

from clipjax.data.builder import parse_source_spec
from clipjax.data.paths import expand_user
from clipjax.errors import UserError

_FIELD_FLAG = re.compile(r"^--(config\.[\w.]+)=(.*)$", re.S)
# Config fields that hold a data source spec.
_SOURCE_FIELD = re.compile(r"^config\.(data\.(train|text)|.*\.source)$")
# Flags (and config fields, by their last name) that hold a local path.
PATH_FLAGS = ("workdir", "index", "images", "out", "doc", "input", "output", "json", "md",
              "captions", "image", "model_dir", "config", "checkpoint", "adapted")
_PATH_FLAG = re.compile(rf"^--((?:config\.[\w.]*\.)?({'|'.join(PATH_FLAGS)}))=(.*)$", re.S)
HELP_FLAGS = ("--help", "-h", "--helpshort", "--helpfull", "-?")


def expand_path_flags(argv: Sequence[str]) -> list[str]:
  """`~` and `$VAR` expanded in the values of path flags (a shell leaves `--x=~/a` as it is)."""
  out = []
  for arg in argv:
    match = _PATH_FLAG.match(arg)
    out.append(f"--{match.group(1)}={expand_user(match.group(3))}" if match else arg)
  return out


def rewrite_source_specs(argv: Sequence[str]) -> list[str]:
  """`--config.data.train=KIND:k=v,...` or `={"json": ...}` -> `={'python': dict}`, for the
  source fields (`data.train`, `data.text`, `*.source`); every other argument passes through.
  A spec that cannot be parsed, or a source field given twice, is a UserError naming the flag."""
  out, seen = [], set()
  for arg in argv:
    match = _FIELD_FLAG.match(arg)
    if match and _SOURCE_FIELD.match(match.group(1)):
      if match.group(1) in seen:
        raise UserError(f"--{match.group(1)} is given twice: an unquoted brace range or list "
                        f"({{00000..00009}}, {{a,b}}) is split by the shell into several "
                        f"arguments; quote the spec, e.g. --{match.group(1)}='wds:shards="
                        f"data/{{00000..00009}}.tar'")
      seen.add(match.group(1))
      value = match.group(2).strip()
      if value.startswith("{"):
        try:
          arg = f"--{match.group(1)}={json.loads(value)!r}"
        except json.JSONDecodeError:
          pass  # a Python dict literal: ml_collections parses it as it is
      else:
        arg = f"--{match.group(1)}={parse_source_spec(value)!r}"
    out.append(arg)
  return out


def _config_error(error: BaseException, argv: Sequence[str]) -> str:
  """One line for an ml_collections override or config-file failure."""
  chain, e = [], error
  while e is not None:
    chain.append(e)
    e = e.__cause__ or e.__context__
  for e in sorted(chain, key=lambda e: not isinstance(e, KeyError)):
    if isinstance(e, (KeyError, AttributeError)) and e.args and isinstance(e.args[0], str):
      name, _, hint = e.args[0].partition("\n")
      name = name.strip("'\"")
      flag = next((a.split("=", 1)[0] for a in argv if re.search(
          rf"^--config(\.\w+)*\.{re.escape(name)}(\.[\w.]+)?(=|$)", a)),
                  f"config field {name!r}")
      match = re.search(r'Did you mean "([^"]+)"', hint)
      moved = _moved(flag, argv)
      if moved:
        return f"{flag}: {moved}"
      return (f"{flag}: unknown config field {name!r}"
              + (f" (did you mean {match.group(1)!r}?)" if match else ""))
  for e in chain:
    if isinstance(e, (FileNotFoundError, SyntaxError, ImportError)) or (
        isinstance(e, OSError) and "config" not in str(e)):
      return f"--config: cannot load the config file: {e}"
  return str(chain[-1]).splitlines()[0] if str(chain[-1]) else repr(chain[-1])


# Where a `--config.FIELD` that a config lacks is now: (dotted field, the --config file's
# method or None) -> a one-line message, or None. Set by `run(..., field_hint=...)` of a CLI
# whose configs moved fields (clipjax.main: the previous layout, `methods.layout`).
_field_hint: Callable[[str, str | None], str | None] | None = None


def _moved(flag: str, argv: Sequence[str]) -> str | None:
  """Where a `--config.FIELD` of the previous config layout is now (`loss.a` -> `draft.a`,
  for the method of the `--config` file)."""
  if _field_hint is None or not flag.startswith("--config.") or "config" not in flags.FLAGS:
    return None
  method = None
  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  try:  # the flag's value is unset when an override failed: load the file again
    method = flags.FLAGS["config"].parser.parse(path).get("method") if path else None
  except Exception:  # noqa: BLE001 (the message names every method with the field instead)
    pass
  return _field_hint(flag[len("--config."):], method)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing with one-line errors (status 2) instead of tracebacks."""
  try:
    return flags.FLAGS(list(argv))
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # A config file's own exception comes as a traceback: its first and last lines say it.
    message = f"{lines[0]} {lines[-1]}" if len(lines) > 1 else lines[0]
  except Exception as e:  # ml_collections raises KeyError / AttributeError / OSError
    message = _config_error(e, argv)
  _usage_exit(message)


def _usage_exit(message: str) -> None:
  name = os.path.basename(sys.argv[0]) if sys.argv else "clipjax"
  sys.stderr.write(f"{name}: error: {message}\n")
  sys.exit(2)


def _guarded(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  def wrapper(argv):
    try:
      return main(argv)
    except UserError as e:
      _usage_exit(str(e).replace("\n", " ").strip())
    except OSError as e:  # ml_collections defers a config file's load error to first use
      if "config file" not in str(e) and "Configuration is not available" not in str(e):
        raise
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      _usage_exit(f"--config: cannot load the config file: {lines[-1]}")
    except KeyboardInterrupt:
      sys.stderr.write("interrupted\n")
      sys.exit(130)
  return wrapper


def quiet_cpu_logs() -> None:
  """No backend-probe lines on a machine without accelerators, no faiss loader lines, and no
  "leaked shared_memory" warning at exit: grain's worker processes hand batches over in shared
  memory, and the segments of batches still in flight when a run ends are reclaimed by
  multiprocessing's resource tracker, which warns about each one. The tracker process takes
  its warning filters from sys.warnoptions when it starts."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  for name in ("faiss", "faiss.loader", "jax._src.xla_bridge"):
    py_logging.getLogger(name).setLevel(py_logging.ERROR)
  quiet = "ignore:resource_tracker:UserWarning"
  if quiet not in sys.warnoptions:
    sys.warnoptions.append(quiet)


def _config_lines(tree, prefix: str = "--config") -> list[str]:
  if hasattr(tree, "items") and (not hasattr(tree, "get") or "kind" not in tree):
    return [line for k, v in tree.items() for line in _config_lines(v, f"{prefix}.{k}")]
  value = tree.to_dict() if hasattr(tree, "to_dict") else tree
  return [f"  {prefix}={value!r}"]


def print_help(main: Callable, argv: Sequence[str]) -> None:
  """The usage of `main`'s module, its flags and, for a config-file CLI given --config, every
  config field with its value (each one a `--config.FIELD=VALUE` override)."""
  module = sys.modules.get(main.__module__)
  print((module.__doc__ or "").strip() + "\n")
  if "--helpfull" in argv:
    print(flags.FLAGS.get_help())
    return
  lines = flags.FLAGS.main_module_help().splitlines()
  print("flags:\n" + "\n".join(l for l in lines if not l.rstrip().endswith(".py:")) + "\n")
  if "config" not in flags.FLAGS:
    return
  rest = [a for a in argv if a not in HELP_FLAGS]
  if not any(a.startswith("--config=") for a in rest):
    print("config fields: add --config=FILE (e.g. --config=configs/draft.py --help) to list "
          "that config's fields with their values; override any with --config.FIELD=VALUE")
    return
  try:
    flags.FLAGS(rest)
  except flags.IllegalFlagValueError as e:  # a required flag (--workdir) is not needed here
    if "must have a value other than None" not in str(e):
      parse_flags(rest)
  except Exception:  # noqa: BLE001 (parse_flags reports it in one line)
    parse_flags(rest)
  print("config fields (override with --config.FIELD=VALUE):")
  print("\n".join(_config_lines(flags.FLAGS["config"].value)))


def run(main: Callable[[list[str]], None], argv: Sequence[str] | None = None, *,
        field_hint: Callable[[str, str | None], str | None] | None = None) -> None:
  """`app.run(main)` with clipjax's conventions (see the module docstring). field_hint: where
  a config field the config lacks has moved (see `_field_hint`)."""
  global _field_hint
  _field_hint = field_hint
  quiet_cpu_logs()
  argv = list(sys.argv if argv is None else argv)
  try:
    argv = rewrite_source_specs(expand_path_flags(argv))
  except UserError as e:
    _usage_exit(str(e))
  if any(a in HELP_FLAGS for a in argv[1:]):
    try:
      print_help(main, argv)
    except UserError as e:
      _usage_exit(str(e))
    sys.exit(0)
  app.run(_guarded(main), argv=argv, flags_parser=parse_flags)
