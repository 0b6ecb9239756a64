"""Sources from config: `make_source({"kind": ..., **arguments})`, the one place configs turn
into data. Kinds: synthetic, manifest, coco, wds, tfds, array_record, vqav1."""
from __future__ import annotations

from typing import Any, Mapping

from etils import epath


def _glob(pattern: str) -> list[str]:
  path = epath.Path(pattern)
  matches = sorted(str(p) for p in path.parent.glob(path.name))
  if not matches:
    raise FileNotFoundError(f"no files match {pattern}")
  return matches


def _args(spec: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...]):
  kind = spec["kind"]
  unknown = set(spec) - {"kind", *required, *optional}
  if unknown:
    raise ValueError(f"data source {kind!r}: unknown fields {sorted(unknown)}; it takes "
                     f"{list(required)} and optionally {list(optional)}")
  missing = [k for k in required if spec.get(k) in (None, "")]
  if missing:
    raise ValueError(f"data source {kind!r} needs {missing}")
  return {k: spec[k] for k in (*required, *optional) if k in spec and spec[k] is not None}


def make_source(spec: Mapping[str, Any]):
  """A random-access source (len + getitem of schema records) from a config dict."""
  spec = dict(spec)
  kind = spec.get("kind")
  if kind == "synthetic":
    from clipjax.data.synthetic import SyntheticScenes
    return SyntheticScenes(**_args(spec, (), ("size", "resolution", "seed", "split")))
  if kind == "manifest":
    from clipjax.data.sources import ManifestSource
    return ManifestSource(**_args(spec, ("manifest",), ("image_root",)))
  if kind == "coco":
    from clipjax.data.sources import CocoCaptionsSource
    return CocoCaptionsSource(**_args(spec, ("annotations", "image_root"), ()))
  if kind == "wds":
    from clipjax.data.sources import WebDatasetSource
    return WebDatasetSource(_glob(_args(spec, ("shards",), ())["shards"]))
  if kind == "tfds":
    from clipjax.data.sources import TfdsSource
    return TfdsSource(**_args(spec, ("name", "split", "data_dir"),
                              ("image_key", "caption_key", "label_key", "id_key")))
  if kind == "array_record":
    from clipjax.data.array_record import ArrayRecordSource
    return ArrayRecordSource(_glob(_args(spec, ("paths",), ())["paths"]))
  if kind == "vqav1":
    from clipjax.evaluate.vqa import VQAv1Source
    return VQAv1Source(**_args(spec, ("questions", "image_root"), ("annotations", "image_pattern")))
  raise ValueError(f"unknown data source kind {kind!r}; expected one of synthetic, manifest, "
                   f"coco, wds, tfds, array_record, vqav1")
