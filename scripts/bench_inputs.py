"""Fixed, realistic texts for the benchmarks: real captions and dialogue turns of set lengths.

The benchmarks time text work by its token count, so their texts must not change when another
feature does (the synthetic scenes' captions grew to place every object once, and the DRAFT
step benchmark silently measured twice the text work). These never change:
- captions: the vendored COCO sample's 145 human captions (29 photos, five each; ~11 words,
  14 BPE tokens on average, in manifest order);
- dialogue turns: one question–answer pair per COCO photo, written for this benchmark in the
  form and length of VisDial's (questions ~6 words, answers ~3 words; Das et al., 2017), as
  DRAFT's `one_qa` mode feeds them (`Q: … A: …`, clipjax.data.records.format_qa).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COCO_MANIFEST = Path(__file__).resolve().parents[1] / "third_party/coco_sample/manifest.jsonl"

# One VisDial-style turn per COCO sample photo, by image id.
QA_BY_IMAGE = {
    159269: ("are the umbrellas open?", "no, they are closed"),
    466137: ("what color is the cup?", "blue and white"),
    78499: ("how many horses are there?", "about ten"),
    252639: ("is the bus moving?", "yes, down the road"),
    433998: ("is there a batter in view?", "no, just the pitcher"),
    408805: ("what color are the walls?", "yellow"),
    125870: ("how many planes can you see?", "five or six"),
    231460: ("can you read the signs?", "yes, street names"),
    107438: ("is the traffic light red?", "i can't tell"),
    358083: ("what color is the cat?", "black and white"),
    216794: ("is anyone sitting on the bench?", "no"),
    129648: ("is he wearing a helmet?", "no helmet"),
    790: ("how many people are at the table?", "about six"),
    442450: ("what kind of dog is it?", "looks like a border collie"),
    196393: ("what are they eating?", "seeds from a bowl"),
    525891: ("are the flowers red?", "yes, bright red"),
    256353: ("is the man smiling?", "yes"),
    234748: ("what color is the car?", "blue"),
    174632: ("are there people in the picture?", "only toy figures"),
    379349: ("what is on the bed?", "a stuffed sheep"),
    84284: ("is the laptop turned on?", "yes, the screen is lit"),
    177977: ("is the stove gas or electric?", "electric"),
    330993: ("what color is the van?", "green"),
    114174: ("is this a photo?", "no, it's a drawing"),
    174375: ("is the crowd large?", "yes, the stands are full"),
    212679: ("how many plates are there?", "four"),
    516008: ("is there a mouse on the desk?", "yes, next to the keyboard"),
    213148: ("what drink is with the lunch?", "a can of soda"),
    121647: ("is the wine glass full?", "half full"),
}


def _records() -> list[dict]:
  return [json.loads(line) for line in COCO_MANIFEST.read_text().splitlines() if line.strip()]


def coco_captions(n: int) -> list[str]:
  """The first n COCO sample captions (all five of each photo in turn), cycled past 145."""
  pool = [c for r in _records() for c in r["captions"]]
  return [pool[i % len(pool)] for i in range(n)]


def coco_dialogue_turns(n: int) -> list[str]:
  """n `Q: … A: …` turns, one per photo in manifest order, cycled past 29."""
  from clipjax.data.records import format_qa
  pool = [format_qa(*QA_BY_IMAGE[r["image_id"]]) for r in _records()]
  return [pool[i % len(pool)] for i in range(n)]


def token_lengths(ids: np.ndarray) -> str:
  """'mean M, max X of C' tokens of CLIP BPE ids [N, C] (start and end tokens included)."""
  lengths = (np.asarray(ids) != 0).sum(-1)
  return f"mean {lengths.mean():.1f}, max {lengths.max()} of {ids.shape[-1]}"


def openclip_model(arch: str):
  """open_clip's model of `arch` with random weights (seeded by the caller). clipjax's own
  small test architectures are built from their open_clip JSON; a SigLIP one's timm trunk,
  which timm has no name for, as timm's VisionTransformer at the config's sizes."""
  import open_clip

  from clipjax.models.configs import TimmViTConfig
  from clipjax.models.registry import CLIPJAX_ONLY, get_model_config
  if arch not in CLIPJAX_ONLY:
    return open_clip.create_model(arch, pretrained=None)
  cfg = get_model_config(arch)
  spec = cfg.to_openclip_json()
  if not isinstance(cfg.vision, TimmViTConfig):
    return open_clip.model.CLIP(**spec)
  import timm
  v, base = cfg.vision, "vit_base_patch16_siglip_224"
  spec.pop("custom_text")
  spec["vision_cfg"] = dict(spec["vision_cfg"], timm_model_name=base, image_size=224)
  model = open_clip.model.CustomTextCLIP(**spec)
  model.visual.trunk = timm.create_model(
      base, img_size=v.image_size, patch_size=v.patch_size, embed_dim=v.width, depth=v.layers,
      num_heads=v.heads, mlp_ratio=v.mlp_ratio, num_classes=0, global_pool="map",
      act_layer="gelu_tanh" if v.gelu_tanh else "gelu")
  return model
