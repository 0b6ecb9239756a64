"""Combining sources: UniCL's image–label + image–text mix (docs/methods.md §4)."""
from __future__ import annotations

import functools
from typing import Any

import grain

from clipjax.data.views import MapRecords


def _prompt_caption(class_names, template: str, record: dict[str, Any], index: int) -> dict:
  del index
  return dict(record, caption=template.format(class_names[record["label"]]))


def _unique_label(offset: int, record: dict[str, Any], index: int) -> dict:
  return dict(record, label=offset + index)


def balanced_unicl_source(labelled, class_names, captioned, template: str = "a photo of a {}."):
  """Equal numbers of image–label and image–text samples, interleaved one by one (the shorter
  source is cycled), as UniCL's balanced sampler.

  Image–label records get their caption from `template` filled with the class name; image–text
  pairs get label `len(class_names) + index`, unique across the source and so across hosts
  (which read disjoint indices). Returns a grain MapDataset of length twice the longer source.
  """
  a = grain.MapDataset.source(MapRecords(
      labelled, functools.partial(_prompt_caption, tuple(class_names), template)))
  b = grain.MapDataset.source(MapRecords(
      captioned, functools.partial(_unique_label, len(class_names))))
  n = max(len(a), len(b))
  return grain.MapDataset.mix([a.repeat()[:n], b.repeat()[:n]], weights=[0.5, 0.5])
