"""Sources from config: `make_source(spec)`, the one place configs turn into data.

A spec is a dict (`{"kind": "coco", "annotations": ..., "image_root": ...}`), a JSON object
string, or the command-line form `KIND:key=value,key=value`
(`manifest:manifest=data/train.jsonl,image_root=data`). Kinds: synthetic, manifest, csv, folder,
coco, wds, parquet, tfds, array_record, vqav1 (docs/data.md). Paths expand `~` and `$VAR`;
shard and file lists take brace ranges and globs (`clipjax.data.paths`). `check_source_spec`
validates a spec (kind, fields, that its paths exist) without reading any data, so a typo
fails before a model is built.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from typing import Any, Mapping

from etils import epath

from clipjax.data.array_record import ArrayRecordSource
from clipjax.data.folder import LAYOUTS, FolderSource
from clipjax.data.manifest import ManifestSource, open_clip_csv
from clipjax.data.paths import expand_braces, expand_user, resolve_files, split_outside_braces
from clipjax.data.shards import ParquetSource, WebDatasetSource
from clipjax.data.sources import CocoCaptionsSource, TfdsSource, VQAv1Source
from clipjax.data.synthetic import CAPTION_DETAILS, SPLITS, SyntheticScenes
from clipjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class _Kind:
  cls: type  # built from the spec's fields (a glob field: from the sorted matches)
  required: tuple[str, ...]
  optional: tuple[str, ...] = ()
  paths: tuple[str, ...] = ()  # fields naming files or folders that must exist
  globs: tuple[str, ...] = ()  # fields holding a file list spec (braces, globs) that must match
  ints: tuple[str, ...] = ()   # fields parsed as integers from a spec string
  choices: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (field, allowed values)


_KINDS = {
    "synthetic": _Kind(SyntheticScenes, (), ("size", "resolution", "seed", "split",
                                             "caption_detail"),
                       ints=("size", "resolution", "seed"),
                       choices=(("split", tuple(SPLITS)), ("caption_detail", CAPTION_DETAILS))),
    "manifest": _Kind(ManifestSource, ("manifest",), ("image_root", "img_key", "caption_key",
                                                      "sep"), paths=("manifest", "image_root")),
    "csv": _Kind(open_clip_csv, ("file",), ("image_root", "img_key", "caption_key", "sep"),
                 paths=("file", "image_root")),
    "folder": _Kind(FolderSource, ("root",), ("layout", "template"), paths=("root",),
                    choices=(("layout", LAYOUTS),)),
    "coco": _Kind(CocoCaptionsSource, ("annotations", "image_root"),
                  paths=("annotations", "image_root")),
    "wds": _Kind(WebDatasetSource, ("shards",), globs=("shards",)),
    "parquet": _Kind(ParquetSource, ("files",), ("image_key", "caption_key", "label_key",
                                                 "id_key"), globs=("files",)),
    "tfds": _Kind(TfdsSource, ("name", "split", "data_dir"),
                  ("image_key", "caption_key", "label_key", "id_key"), paths=("data_dir",)),
    "array_record": _Kind(ArrayRecordSource, ("paths",), globs=("paths",)),
    "vqav1": _Kind(VQAv1Source, ("questions", "image_root"), ("annotations", "image_pattern"),
                   paths=("questions", "image_root", "annotations")),
}
SOURCE_KINDS = tuple(_KINDS)


def synthetic(size: int, split: str = "train", resolution: int = 64) -> dict:
  """The spec of `size` synthetic scenes of `split` at `resolution` pixels (seed 0)."""
  return dict(kind="synthetic", size=size, resolution=resolution, seed=0, split=split)


def _suggest(word: str, choices) -> str:
  close = difflib.get_close_matches(word, list(choices), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


def parse_source_spec(spec: Any) -> dict[str, Any]:
  """A source spec in any accepted form -> a plain dict with `kind` (not yet checked)."""
  if isinstance(spec, Mapping) or hasattr(spec, "to_dict"):
    return dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
  if not isinstance(spec, str) or not spec.strip():
    raise ConfigError(f"a data source must be a dict or a 'KIND:key=value,...' string, got "
                      f"{spec!r}")
  text = spec.strip()
  if text.startswith("{"):
    try:
      value = json.loads(text)
    except json.JSONDecodeError as e:
      raise ConfigError(f"data source {text!r} is not valid JSON: {e}") from None
    return parse_source_spec(value)
  kind, _, rest = text.partition(":")
  out: dict[str, Any] = {"kind": kind}
  for item in filter(None, (p.strip() for p in split_outside_braces(rest))):  # commas in {a,b} stay
    key, eq, value = item.partition("=")
    if not eq:
      raise ConfigError(f"data source {text!r}: {item!r} is not key=value")
    out[key.strip()] = value.strip()
  for key in _KINDS[kind].ints if kind in _KINDS else ():  # check_source_spec names a bad kind
    if isinstance(out.get(key), str):
      try:
        out[key] = int(out[key])
      except ValueError:
        raise ConfigError(f"data source {text!r}: {key} must be an integer, got "
                          f"{out[key]!r}") from None
  return out


def check_source_spec(spec: Any, name: str = "data source") -> dict[str, Any]:
  """Validates kind, fields and paths; returns the spec as a dict. Reads no data."""
  spec = parse_source_spec(spec)
  kind = spec.get("kind")
  if kind not in _KINDS:
    raise ConfigError(f"{name}: unknown kind {kind!r}{_suggest(str(kind), _KINDS)}; expected one "
                      f"of {', '.join(_KINDS)}")
  rule = _KINDS[kind]
  for field in set(spec) - {"kind", *rule.required, *rule.optional}:
    raise ConfigError(f"{name} ({kind}): unknown field {field!r}"
                      f"{_suggest(field, rule.required + rule.optional)}; it takes "
                      f"{list(rule.required)} and optionally {list(rule.optional)}")
  missing = [k for k in rule.required if spec.get(k) in (None, "")]
  if missing:
    raise ConfigError(f"{name} ({kind}) needs {missing}, e.g. "
                      f"{kind}:" + ",".join(f"{k}=..." for k in rule.required))
  for field, allowed in rule.choices:
    if spec.get(field) is not None and spec[field] not in allowed:
      raise ConfigError(f"{name} ({kind}): {field}={spec[field]!r} is not one of {list(allowed)}"
                        f"{_suggest(str(spec[field]), allowed)}")
  for field in rule.paths + rule.globs:
    if isinstance(spec.get(field), str):
      spec[field] = expand_user(spec[field])
  for field in rule.paths:  # one file or folder each: a brace list must name exactly one
    if spec.get(field) and len(expand_braces(spec[field])) > 1:
      raise ConfigError(f"{name} ({kind}): {field}={spec[field]} names "
                        f"{len(expand_braces(spec[field]))} paths; it takes one (file lists "
                        f"are for {', '.join(k for k, r in _KINDS.items() if r.globs)})")
    if spec.get(field):
      spec[field] = expand_braces(spec[field])[0]
  for field in rule.paths:
    if spec.get(field) and not epath.Path(spec[field]).exists():
      hint = (f" (prepare it with `tfds build {spec.get('name')} --data_dir={spec[field]} "
              f"--file_format=array_record`)" if kind == "tfds" else "")
      raise ConfigError(f"{name} ({kind}): {field}={spec[field]} does not exist{hint}")
  for field in rule.globs:
    resolve_files(spec[field], f"{name} ({kind}): {field}")
  return spec


def make_source(spec: Any):
  """A random-access source (len + getitem of schema records) from a spec."""
  spec = check_source_spec(spec)
  kind = spec.pop("kind")
  args = {k: v for k, v in spec.items() if v is not None}
  info = _KINDS[kind]
  for field in info.globs:
    args[field] = resolve_files(args[field], field)
  return info.cls(**args)
