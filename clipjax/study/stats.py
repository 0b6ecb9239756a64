"""Statistics over seeds: mean, standard deviation, a 95 % Student-t interval of the mean and a
95 % prediction interval for one more seed per arm, the paired difference between two arms run
with the same seeds, and a verdict that is never more certain than its interval."""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import special

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Summary:
  """n values: mean, sample standard deviation (ddof 1), the two-sided `LEVEL` t interval of
  the mean (low, high) and the `LEVEL` prediction interval of one more value drawn the same
  way (next_low, next_high: mean ± t·sd·√(1 + 1/n)); infinite with one value: one seed says
  nothing about the spread."""
  n: int
  mean: float
  sd: float
  low: float
  high: float
  next_low: float
  next_high: float


def summarize(values: Sequence[float]) -> Summary:
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
    raise ValueError(f"summarize needs one or more finite values, got {values!r}")
  mean = float(x.mean())
  if x.size == 1:
    return Summary(1, mean, math.nan, -math.inf, math.inf, -math.inf, math.inf)
  sd = float(x.std(ddof=1))
  t = float(special.stdtrit(x.size - 1, 0.5 + LEVEL / 2))
  half, next_half = t * sd / math.sqrt(x.size), t * sd * math.sqrt(1 + 1 / x.size)
  return Summary(int(x.size), mean, sd, mean - half, mean + half, mean - next_half,
                 mean + next_half)


def paired_difference(arm: Sequence[float], comparison: Sequence[float]) -> Summary:
  """Summary of arm[i] - comparison[i] (seed i of both): the seed's shared data order and
  initialisation cancel, so the interval is narrower than that of two independent means."""
  a, b = np.asarray(arm, np.float64), np.asarray(comparison, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired arms need the same seeds, got {a.shape[0]} and {b.shape[0]} values")
  return summarize(a - b)


def verdict(difference: Summary, expected: str) -> str:
  """'agrees' when the interval lies wholly on the `expected` side of 0 ('higher' or 'lower'),
  'disagrees' when wholly on the other, else 'inconclusive (interval spans 0)'."""
  if expected not in ("higher", "lower"):
    raise ValueError(f"expected must be 'higher' or 'lower', got {expected!r}")
  above, below = difference.low > 0, difference.high < 0
  if not (above or below):
    return "inconclusive (interval spans 0)"
  return "agrees" if above == (expected == "higher") else "disagrees"
