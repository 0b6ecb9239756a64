"""Embedded synthetic dataset: rendered scenes of 1–3 objects with captions, long captions,
question–answer dialogues, labels, text pairs/triplets and a multiple-choice VQA split.

Scene `i` of a split is a pure function of (seed, split, i), so the dataset is random access
(a grain source), identical on every host and worker, and needs no files. 8 shapes x 8
colours x 2 sizes x 9 grid cells x 8 backgrounds x pixel noise: memorising it is impossible.
Labels are the main (first, largest) object's colour + shape: 64 classes.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

from clipjax.data.records import format_qa

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "heart")
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (40, 70, 220),
           "yellow": (240, 220, 30), "purple": (140, 40, 170), "orange": (250, 140, 20),
           "white": (250, 250, 250), "black": (15, 15, 15)}
BACKGROUNDS = {"gray": (128, 128, 128), "beige": (225, 210, 180), "sky blue": (150, 200, 235),
               "dark green": (30, 80, 45), "pink": (240, 180, 200), "brown": (110, 75, 45),
               "navy": (25, 30, 90), "teal": (40, 140, 140)}
SIZES = ("small", "large")
NUMBERS = ("zero", "one", "two", "three")
CLASS_NAMES = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
# Zero-shot prompts for the synthetic classes, in the style of the captions.
PROMPT_TEMPLATES = ("a {c}.", "a small {c} on a plain background.", "a large {c} in the picture.")
SPLITS = {"train": 0, "eval": 1, "vqa": 2}  # disjoint random streams: vqa scenes are held out


@dataclasses.dataclass(frozen=True)
class SceneObject:
  shape: str
  colour: str
  size: str
  row: int  # grid cell 0..2 top to bottom
  col: int  # 0..2 left to right

  @property
  def name(self) -> str:
    return f"{self.colour} {self.shape}"


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
  def ring(n, radius, start=-math.pi / 2):
    return [(cx + radius[k % len(radius)] * math.cos(start + 2 * math.pi * k / n),
             cy + radius[k % len(radius)] * math.sin(start + 2 * math.pi * k / n)) for k in range(n)]
  if shape == "triangle":
    return ring(3, [r])
  if shape == "square":
    return ring(4, [r], start=math.pi / 4)
  if shape == "diamond":
    return ring(4, [r])
  if shape == "hexagon":
    return ring(6, [r])
  if shape == "star":
    return ring(10, [r, 0.45 * r])
  if shape == "cross":
    a, b = 0.35 * r, r
    return [(cx - a, cy - b), (cx + a, cy - b), (cx + a, cy - a), (cx + b, cy - a), (cx + b, cy + a),
            (cx + a, cy + a), (cx + a, cy + b), (cx - a, cy + b), (cx - a, cy + a), (cx - b, cy + a),
            (cx - b, cy - a), (cx - a, cy - a)]
  if shape == "heart":
    return [(cx + r * 0.9 * math.sin(t) ** 3,
             cy - r * 0.8 * (13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t)
                             - math.cos(4 * t)) / 16) for t in np.linspace(0, 2 * math.pi, 24)]
  raise ValueError(shape)


def _pick(rng: np.random.Generator, options):
  """One element of a sequence (rng.choice converts lists to arrays: 10x slower here)."""
  return options[int(rng.integers(len(options)))]


_BACKGROUND_NAMES = tuple(BACKGROUNDS)
_COLOUR_NAMES = tuple(COLOURS)


def sample_scene(rng: np.random.Generator) -> tuple[str, list[SceneObject]]:
  background = _pick(rng, _BACKGROUND_NAMES)
  n = int(rng.integers(1, 4))
  cells = rng.permutation(9)[:n]
  objects = []
  for k, cell in enumerate(cells):
    colour = _pick(rng, _COLOUR_NAMES)
    size = "large" if k == 0 else _pick(rng, SIZES)  # the main object is large
    objects.append(SceneObject(_pick(rng, SHAPES), colour, size, int(cell) // 3, int(cell) % 3))
  return background, objects


def render(background: str, objects: list[SceneObject], size: int, rng: np.random.Generator,
           noise: int = 12) -> np.ndarray:
  img = Image.new("RGB", (size, size), BACKGROUNDS[background])
  draw = ImageDraw.Draw(img)
  cell = size / 3
  for obj in objects:
    r = cell * (0.45 if obj.size == "large" else 0.25)
    cx = (obj.col + 0.5) * cell + rng.uniform(-0.1, 0.1) * cell
    cy = (obj.row + 0.5) * cell + rng.uniform(-0.1, 0.1) * cell
    if obj.shape == "circle":
      draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[obj.colour])
    else:
      draw.polygon(_polygon(obj.shape, cx, cy, r), fill=COLOURS[obj.colour])
  # uniform integer pixel noise in [-noise, noise]: as good as Gaussian here, 5x cheaper
  pixels = np.asarray(img, np.int16) + rng.integers(-noise, noise + 1, (size, size, 3), np.int16)
  return np.clip(pixels, 0, 255).astype(np.uint8)


def _relation(a: SceneObject, b: SceneObject) -> str:
  if a.col != b.col:
    return "to the left of" if a.col < b.col else "to the right of"
  return "above" if a.row < b.row else "below"


def _where(o: SceneObject) -> str:
  vertical = ("top", "middle", "bottom")[o.row]
  horizontal = ("left", "center", "right")[o.col]
  return "center" if (vertical, horizontal) == ("middle", "center") else f"{vertical} {horizontal}"


def describe(background: str, objects: list[SceneObject], rng: np.random.Generator,
             caption_detail: str = "full") -> dict:
  """Caption, full caption (the "full" one whatever the detail: what retrieval queries on
  full captions read), long caption, the QA pairs, a paraphrase and a one-attribute-swap
  negative.

  caption_detail "full": the caption lists every object with its place and the background,
  the dialogue asks about facts it already states. "partial": the caption names the main
  object only, and the dialogue reveals what it leaves out (the object count, the background,
  where the main object is and, with two or more objects, which object stands next to it), as
  real captions leave most of a scene unsaid.
  """
  names = [f"a {o.size} {o.name}" for o in objects]
  main = objects[0]
  count = NUMBERS[len(objects)]
  # the full caption places every object: pretraining on it is what makes the base's image
  # tower encode positions, one of the facts the partial dialogues tell
  placed = [f"{n} at the {_where(o)}" for n, o in zip(names, objects)]
  every = placed[0] if len(placed) == 1 else ", ".join(placed[:-1]) + " and " + placed[-1]
  full_caption = f"{every} on a {background} background"
  if caption_detail == "partial":
    listed, caption = names[0], names[0]
  else:
    listed, caption = every, full_caption
  sentences = [f"There {'is one object' if len(objects) == 1 else f'are {count} objects'} on a "
               f"{background} background."]
  sentences += [f"{n.capitalize()} is at the {_where(o)}." for n, o in zip(names, objects)]
  if len(objects) > 1:
    sentences.append(f"The {main.name} is {_relation(main, objects[1])} the {objects[1].name}.")
  if caption_detail == "partial":
    qa = [("How many objects are in the picture?", count),
          ("What color is the background?", background),
          (f"Where is the {main.name}?", f"at the {_where(main)}")]
    if len(objects) > 1:
      qa.append((f"What is {_relation(objects[1], main)} the {main.name}?", f"a {objects[1].name}"))
    paraphrase = f"a picture showing {listed.replace('a ', 'one ', 1)}"
  else:
    qa = [(f"What color is the {main.shape}?", main.colour),
          ("How many objects are in the picture?", count)]
    if len(objects) > 1:
      qa.append((f"What is {_relation(objects[1], main)} the {main.name}?", f"a {objects[1].name}"))
    else:
      qa.append((f"What shape is the {main.colour} object?", main.shape))
    paraphrase = f"a picture showing {listed.replace('a ', 'one ', 1)} over {background}"
  swapped = dict(colour=_pick(rng, [c for c in COLOURS if c != main.colour]))
  if rng.random() < 0.5:
    swapped = dict(shape=_pick(rng, [s for s in SHAPES if s != main.shape]))
  neg_main = dataclasses.replace(main, **swapped)
  negative = caption.replace(f"a {main.size} {main.name}", f"a {neg_main.size} {neg_main.name}", 1)
  return dict(caption=caption, full_caption=full_caption, long_caption=" ".join(sentences),
              dialogue=qa, paraphrase=paraphrase, hard_negative=negative)


# VQA question types. "full" captions state all three facts. "partial" ones state only the main
# object's colour and shape, and every question asks a fact only the dialogue reveals: the
# count, another object ("objects"; a one-object scene is asked its "position" instead), the
# main object's position, the background.
QUESTION_TYPES = {"full": ("color", "shape", "count"),
                  "partial": ("count", "objects", "position", "background")}
POSITIONS = ("top left", "top center", "top right", "middle left", "center", "middle right",
             "bottom left", "bottom center", "bottom right")
CAPTION_DETAILS = tuple(QUESTION_TYPES)
_MORE_NUMBERS = (*NUMBERS[1:], "four", "five", "six", "seven", "eight")


def _vqa_item(background: str, objects: list[SceneObject], rng: np.random.Generator,
              caption_detail: str = "full") -> tuple[str, str, list[str], int]:
  """A question with 8 candidate answers of the right type; returns (question type, question,
  candidates, index of the right one)."""
  main = objects[0]
  kind = QUESTION_TYPES[caption_detail][int(rng.integers(len(QUESTION_TYPES[caption_detail])))]
  if kind == "objects" and len(objects) == 1:
    kind = "position"
  second = objects[1] if len(objects) > 1 else main  # only asked about with two or more
  question, answer, pool = {
      "color": (f"What color is the {main.shape}?", main.colour, list(COLOURS)),
      "shape": (f"What shape is the {main.colour} object?", main.shape, list(SHAPES)),
      "count": ("How many objects are in the picture?", NUMBERS[len(objects)], _MORE_NUMBERS),
      "background": ("What color is the background?", background, list(BACKGROUNDS)),
      "position": (f"Where is the {main.name}?", f"at the {_where(main)}",
                   [f"at the {p}" for p in POSITIONS]),
      "objects": (f"What is {_relation(second, main)} the {main.name}?", f"a {second.name}",
                  [f"a {n}" for n in CLASS_NAMES]),
  }[kind]
  wrong = [p for p in pool if p != answer]
  candidates = [answer, *rng.choice(wrong, size=7, replace=False)]
  order = rng.permutation(8)
  return kind, question, [str(candidates[o]) for o in order], int(np.argmax(order == 0))


class SyntheticScenes:
  """Random-access synthetic dataset (a grain data source). `split` in {train, eval, vqa};
  `caption_detail` "full" (every object and the background) or "partial" (the main object
  only; the dialogue covers the rest, and every VQA question asks what only the dialogue
  tells), see `describe`."""

  def __init__(self, size: int = 10_000, resolution: int = 64, seed: int = 0,
               split: str = "train", caption_detail: str = "full"):
    if split not in SPLITS:
      raise ValueError(f"synthetic split must be one of {list(SPLITS)}, got {split!r}")
    if caption_detail not in CAPTION_DETAILS:
      raise ValueError(f"synthetic caption_detail must be one of {list(CAPTION_DETAILS)}, "
                       f"got {caption_detail!r}")
    self.size, self.resolution, self.seed, self.split = size, resolution, seed, split
    self.caption_detail = caption_detail
    self.class_names = CLASS_NAMES

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.size:
      raise IndexError(index)
    rng = np.random.default_rng([self.seed, SPLITS[self.split], int(index)])
    background, objects = sample_scene(rng)
    record = describe(background, objects, rng, self.caption_detail)
    record.update(image=render(background, objects, self.resolution, rng), image_id=int(index),
                  label=CLASS_NAMES.index(objects[0].name),
                  # the facts partial captions leave out, as classes (the linear-probe task)
                  count=len(objects), position=POSITIONS.index(_where(objects[0])),
                  background=_BACKGROUND_NAMES.index(background))
    if self.split == "vqa":
      kind, question, candidates, answer = _vqa_item(background, objects, rng, self.caption_detail)
      record.update(question=question, question_type=kind, candidates=candidates, answer=answer,
                    candidate_texts=[format_qa(question, c) for c in candidates])
    return record

  def __repr__(self) -> str:
    detail = "" if self.caption_detail == "full" else f", caption_detail={self.caption_detail!r}"
    return (f"SyntheticScenes(size={self.size}, resolution={self.resolution}, seed={self.seed}, "
            f"split={self.split!r}{detail})")
