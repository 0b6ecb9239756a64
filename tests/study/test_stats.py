"""Study statistics against SciPy on fixed numbers."""
import math

import numpy as np
import pytest
from scipy import stats

from clipjax.study.stats import paired_difference, summarize, verdict

ARM = [0.312, 0.298, 0.335, 0.321, 0.305]
BASE = [0.290, 0.281, 0.322, 0.300, 0.296]


def test_summary_matches_scipy_t_interval():
  s = summarize(ARM)
  low, high = stats.t.interval(0.95, len(ARM) - 1, loc=np.mean(ARM), scale=stats.sem(ARM))
  assert s.n == 5 and s.mean == pytest.approx(np.mean(ARM), rel=1e-12)
  assert s.sd == pytest.approx(np.std(ARM, ddof=1), rel=1e-12)
  assert (s.low, s.high) == pytest.approx((low, high), rel=1e-10)
  # one more seed: the t prediction interval, the sd scaled by sqrt(1 + 1/n) instead of 1/sqrt(n)
  pred = stats.t.interval(0.95, len(ARM) - 1, loc=np.mean(ARM),
                          scale=np.std(ARM, ddof=1) * np.sqrt(1 + 1 / len(ARM)))
  assert (s.next_low, s.next_high) == pytest.approx(pred, rel=1e-10)
  assert s.next_low < s.low and s.high < s.next_high


def test_paired_difference_matches_scipy_paired_t_test():
  d = paired_difference(ARM, BASE)
  test = stats.ttest_rel(ARM, BASE)
  ci = test.confidence_interval(0.95)
  assert (d.low, d.high) == pytest.approx((ci.low, ci.high), rel=1e-10)
  # the interval excludes 0 exactly when the two-sided p-value is below 5 %
  assert (d.low > 0) == (test.pvalue < 0.05 and d.mean > 0)
  assert verdict(d, "higher") == "agrees" and verdict(d, "lower") == "disagrees"


def test_verdict_is_never_more_certain_than_the_interval():
  noisy = paired_difference([0.30, 0.35, 0.28], [0.31, 0.29, 0.30])
  assert noisy.low < 0 < noisy.high
  assert verdict(noisy, "higher") == verdict(noisy, "lower") == "inconclusive (interval spans 0)"
  one_seed = summarize([0.3])
  assert math.isnan(one_seed.sd) and one_seed.low == -math.inf and one_seed.high == math.inf
  assert one_seed.next_low == -math.inf and one_seed.next_high == math.inf
  assert verdict(paired_difference([0.9], [0.1]), "higher").startswith("inconclusive")


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="same seeds"):
    paired_difference([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match="finite"):
    summarize([1.0, float("nan")])
  with pytest.raises(ValueError, match="'higher' or 'lower'"):
    verdict(summarize([1.0, 2.0]), "more")
