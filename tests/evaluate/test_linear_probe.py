"""The linear-probe task: its closed-form ridge classifier against scikit-learn's
RidgeClassifier on random data, and the task on synthetic scenes (each record read once, the
targets those of the records, a missing field named)."""
import collections

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier

from clipjax.evaluate.tasks.linear_probe import ridge_probe


@pytest.mark.parametrize("alpha", [1e-3, 1.0, 30.0])
def test_ridge_probe_predicts_as_sklearn(alpha):
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(5, 12))
  y = rng.integers(0, 5, 300)
  x = centres[y] + 1.5 * rng.normal(size=(300, 12))
  ours = ridge_probe(x[:200], y[:200], x[200:], alpha)
  ref = RidgeClassifier(alpha=alpha).fit(x[:200], y[:200]).predict(x[200:])
  np.testing.assert_array_equal(ours, ref)
  assert 0.5 < np.mean(ours == y[200:]) < 1.0  # a real, imperfect classification


def test_string_labels_and_classes_missing_from_training():
  x = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.1]])
  y = np.array(["up", "right", "up", "right"])
  assert list(ridge_probe(x, y, np.array([[0.0, 2.0], [3.0, 0.0]]), 1e-3)) == ["up", "right"]


def test_the_task_on_synthetic_scenes_and_a_missing_field(tmp_path):
  from clipjax.data.builder import make_source
  from clipjax.evaluate.embed import clip_encoders, embed_images
  from clipjax.evaluate.tasks import EvalRun, get_task
  from clipjax.options import frozen_block
  from clipjax.models import create_model

  class CountedReads:
    def __init__(self, source):
      self.source, self.reads = source, collections.Counter()

    def __len__(self):
      return len(self.source)

    def __getitem__(self, i):
      self.reads[i] += 1
      return self.source[i]

  model, params = create_model("ViT-T-16-test")
  encoders = clip_encoders(model, params)
  scenes = make_source("synthetic:size=64,resolution=32,split=eval")
  source = CountedReads(scenes)
  task, run = get_task("linear_probe"), EvalRun(str(tmp_path), num_workers=0)
  cfg = frozen_block(task.settings, dict(fields="count,position,background"))
  res = task.evaluate(encoders, source, cfg, run, "base")
  assert set(source.reads) == set(range(64)) and set(source.reads.values()) == {1}  # one pass
  assert res["num_images"] == 64
  # the reference: the records' own fields, probed on the same embeddings
  x = embed_images(encoders, scenes, num_workers=0)["embeddings"]
  for field in ("count", "position", "background"):
    y = np.array([scenes[i][field] for i in range(64)])
    expected = np.mean(ridge_probe(x[:32], y[:32], x[32:], 1.0) == y[32:])
    assert res["metrics"][field] == pytest.approx(expected, abs=1e-12), field
  with pytest.raises(ValueError, match="has no 'colour' field"):
    task.evaluate(encoders, source, frozen_block(task.settings, dict(fields="colour")), run,
                  "base")
