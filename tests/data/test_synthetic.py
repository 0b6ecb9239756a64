"""The embedded synthetic dataset: deterministic, varied, consistent text, held-out VQA."""
import numpy as np

from clipjax.data.records import format_qa
from clipjax.data.synthetic import (CLASS_NAMES, COLOURS, NUMBERS, POSITIONS, SHAPES,
                                    SyntheticScenes)


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


POSITION_WORDS = ("top", "bottom", "left", "right", "center", "middle", "above", "below")


def test_partial_captions_hold_none_of_the_facts_their_dialogues_reveal():
  """caption_detail="partial" on 1,000 scenes: the same scene and image as "full", a caption
  naming only the main object, and answers (count, background, the main object's place and,
  with two or more objects, its neighbour) none of which the caption states."""
  full = SyntheticScenes(1000, 32, caption_detail="full")
  partial = SyntheticScenes(1000, 32, caption_detail="partial")
  for i in range(1000):
    f, p = full[i], partial[i]
    np.testing.assert_array_equal(f["image"], p["image"])
    assert f["long_caption"] == p["long_caption"] and f["label"] == p["label"]
    main = CLASS_NAMES[p["label"]]
    assert p["caption"] == f"a large {main}" and f["caption"].startswith(p["caption"])
    (q_count, count), (q_bg, background), (q_where, where), *neighbour = p["dialogue"]
    assert q_count.startswith("How many") and q_bg == "What color is the background?"
    assert q_where == f"Where is the {main}?" and where.removeprefix("at the ") in POSITIONS
    assert len(neighbour) == (count != "one")
    assert f["caption"].endswith(f"on a {background} background")  # answers are true
    # the full caption places every object (what makes the base encode positions)
    assert f["caption"].count(" at the ") == NUMBERS.index(count) and where in f["caption"]
    words = p["caption"].split()
    assert count not in words and background not in p["caption"]
    for _, other in neighbour:
      if other.removeprefix("a ") != main:  # (a twin of the main object is told by the count)
        assert other.removeprefix("a ") not in p["caption"]
    assert not any(w in POSITION_WORDS for w in words)
    assert p["caption"] not in (p["paraphrase"], p["hard_negative"])
    assert background not in p["paraphrase"] and background not in p["hard_negative"]


def test_partial_vqa_asks_only_what_the_dialogue_reveals():
  """Every question of the partial VQA split asks a fact the caption leaves out and the
  scene's dialogue answers, with the dialogue's answer as the right candidate."""
  vqa = SyntheticScenes(2000, 32, split="vqa", caption_detail="partial")
  records = [vqa[i] for i in range(2000)]
  types = [r["question_type"] for r in records]
  assert set(types) == {"count", "objects", "position", "background"}
  assert min(types.count(t) for t in set(types)) > 300  # every type well represented
  for r in records[:400]:
    right = r["candidates"][r["answer"]]
    assert (r["question"], right) in r["dialogue"], r
    assert right.removeprefix("a ").removeprefix("at the ") not in r["caption"] or (
        r["question_type"] == "objects" and right == f"a {CLASS_NAMES[r['label']]}")  # a twin
  full_types = {SyntheticScenes(300, 32, split="vqa")[i]["question_type"] for i in range(300)}
  assert full_types == {"color", "shape", "count"}  # "full": today's questions


def test_caption_detail_is_checked_and_reachable_from_a_source_spec():
  import pytest

  from clipjax.data.builder import make_source
  source = make_source("synthetic:size=4,caption_detail=partial")
  assert source.caption_detail == "partial" and "caption_detail='partial'" in repr(source)
  with pytest.raises(ValueError, match="caption_detail must be one of"):
    SyntheticScenes(4, caption_detail="some")
