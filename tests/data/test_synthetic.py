"""The embedded synthetic dataset: deterministic, varied, consistent text, held-out VQA."""
import numpy as np

from clipjax.data.records import format_qa
from clipjax.data.synthetic import CLASS_NAMES, COLOURS, SHAPES, SyntheticScenes


def test_deterministic_and_random_access():
  a, b = SyntheticScenes(50, 32, seed=7), SyntheticScenes(50, 32, seed=7)
  for i in (0, 13, 49):
    ra, rb = a[i], b[i]
    np.testing.assert_array_equal(ra["image"], rb["image"])
    assert ra["caption"] == rb["caption"] and ra["dialogue"] == rb["dialogue"]
  assert SyntheticScenes(50, 32, seed=8)[0]["caption"] != a[0]["caption"] or not np.array_equal(
      SyntheticScenes(50, 32, seed=8)[0]["image"], a[0]["image"])


def test_variety_and_consistency():
  ds = SyntheticScenes(2000, 32)
  records = [ds[i] for i in range(2000)]
  assert len({r["caption"] for r in records}) > 1500  # 1-object scenes: 512 captions
  assert len({r["label"] for r in records}) == len(CLASS_NAMES) == 64
  for r in records[:200]:
    main_name = CLASS_NAMES[r["label"]]
    colour, shape = main_name.split()
    assert colour in COLOURS and shape in SHAPES
    assert r["caption"].startswith(f"a large {main_name}")
    assert (f"What color is the {shape}?", colour) == r["dialogue"][0]
    assert len(r["dialogue"]) == 3 and len(r["long_caption"].split(".")) >= 3
    assert r["hard_negative"] != r["caption"] and r["image"].dtype == np.uint8


def test_vqa_split_is_held_out_and_well_formed():
  train = {SyntheticScenes(500, 32)[i]["caption"] + str(i) for i in range(500)}
  vqa = SyntheticScenes(500, 32, split="vqa")
  held_out = 0
  for i in range(500):
    r = vqa[i]
    held_out += (r["caption"] + str(i)) not in train
    assert len(r["candidates"]) == 8 and len(set(r["candidates"])) == 8
    assert r["candidate_texts"][r["answer"]] == format_qa(r["question"], r["candidates"][r["answer"]])
  assert held_out > 480  # different scenes from the training stream
