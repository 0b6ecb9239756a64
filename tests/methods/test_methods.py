"""Every training config learns: a few steps of each method on the synthetic scenes with a
tiny model reach at least 3x chance R@1 on 256 held-out scenes (chance = 1/256).

They train on one device: a tiny model steps ~2.5x faster there than on 8 simulated CPU
devices, and the multi-device step is checked against one device in test_step.py."""
import jax
import numpy as np
import pytest
from method_runs import CHANCE, config_file, fit, held_out_r1, jax_leaves, load_config

import clipjax
from clipjax.data.embedding_table import EmbeddingTable
from clipjax.methods import get_method, run_options
from clipjax.methods.mult import init_mult_params
from clipjax.methods.three_tower import dialogue_as_text_tower


@pytest.fixture(scope="module")
def base_clip(tmp_path_factory):
  """The clip config's run; its export is the pretrained model of draft and three_tower."""
  workdir = tmp_path_factory.mktemp("clip")
  result = fit(load_config("clip"), workdir)
  path = workdir / "base.safetensors"
  clipjax.export_openclip(result["params"]["clip"], "ViT-T-16-test", path)
  return result, str(path)


def test_clip_learns(base_clip):
  result, _ = base_clip
  r1 = held_out_r1(result["model"], result["params"]["clip"])
  assert r1 >= 3 * CHANCE, r1
  assert result["steps_run"] == 40 and not result["bad_records"].any()


@pytest.mark.parametrize("name", ["lit", "unicl", "mult"])  # siglip: test_siglip_base.py
def test_from_scratch_methods_learn(name, tmp_path):
  # mult: a one-layer fusion tower (the code path of any size; a fraction of the step time)
  small = {"mult.tower.width": 64, "mult.tower.heads": 2, "mult.tower.layers": 1}
  cfg = load_config(name, total_steps=60, **(small if name == "mult" else {}))
  result = fit(cfg, tmp_path)
  r1 = held_out_r1(result["model"], result["params"]["clip"])
  assert r1 >= 3 * CHANCE, (name, r1)
  if name == "mult":  # the fusion tower M trained with I and T
    init = init_mult_params(result["model"], cfg.mult, cfg.seed)
    assert not np.array_equal(init["proj"]["kernel"], result["params"]["mult"]["proj"]["kernel"])


def test_draft_learns_and_keeps_image_tower(base_clip, tmp_path):
  _, checkpoint = base_clip
  cfg = load_config("draft", **{"model.checkpoint": checkpoint, "total_steps": 20})
  result = fit(cfg, tmp_path)
  _, base = clipjax.load_openclip(checkpoint, arch="ViT-T-16-test")
  clip = result["params"]["clip"]
  for a, b in zip(jax_leaves(base["visual"]), jax_leaves(clip["visual"])):
    assert np.array_equal(a, b)  # frozen image tower: bitwise unchanged
  assert clip["logit_scale"] == base["logit_scale"]
  assert not np.array_equal(clip["text_projection"], base["text_projection"])
  assert held_out_r1(result["model"], clip) >= 3 * CHANCE


def test_three_tower_learns(base_clip, tmp_path):
  _, checkpoint = base_clip
  cfg = load_config("three_tower", **{"model.checkpoint": checkpoint, "total_steps": 20})
  result = fit(cfg, tmp_path)
  params = result["params"]
  _, base = clipjax.load_openclip(checkpoint, arch="ViT-T-16-test")
  for a, b in zip(jax_leaves(base), jax_leaves(params["clip"])):
    assert np.array_equal(a, b)  # I and T frozen
  third = dialogue_as_text_tower(params["clip"], params["dialogue"])  # G as the text tower
  assert not np.array_equal(third["text_projection"], base["text_projection"])
  assert held_out_r1(result["model"], third) >= 3 * CHANCE


def test_hf_text_tower_trains_in_three_tower(tmp_path):
  """An HF (RoBERTa) text tower through the whole loop: its tokenizer in grain workers, padding
  trimmed by its pad id, G copied from it and trained while I and T stay frozen."""
  import json

  from conftest import write_hf_text_dir

  from clipjax.data.synthetic import SyntheticScenes
  scenes = SyntheticScenes(64, 32, seed=0)
  corpus = [scenes[i][k] for i in range(64) for k in ("caption", "long_caption")]
  hf_dir = write_hf_text_dir(tmp_path / "roberta", "roberta", corpus)
  arch = tmp_path / "roberta-ViT-T.json"
  arch.write_text(json.dumps(dict(
      embed_dim=64, vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=16),
      text_cfg=dict(hf_model_name=str(hf_dir), hf_pooler_type="mean_pooler"))))
  cfg = load_config("three_tower", **{"model.arch": str(arch), "total_steps": 6,  # the HF
                                      "batch_size": 32, "data.num_workers": 1})  # tokenizer in a worker
  result = fit(cfg, tmp_path / "run")
  params = result["params"]
  assert set(params["dialogue"]) == {"transformer", "proj_0", "proj_2"}
  _, init = clipjax.create_model(str(arch), seed=cfg.seed)
  for a, b in zip(jax_leaves(init), jax_leaves(params["clip"])):
    assert np.array_equal(a, b)  # I and T frozen
  third = dialogue_as_text_tower(params["clip"], params["dialogue"])
  assert not np.array_equal(third["text"]["proj_2"]["kernel"], init["text"]["proj_2"]["kernel"])
  assert np.isfinite(held_out_r1(result["model"], third))


def test_trimmed_text_gives_the_same_loss():
  """Cutting the padding columns (the loop's default) is exact: same DRAFT loss."""
  from clipjax.data.synthetic import SyntheticScenes
  from clipjax.parallel.mesh import make_mesh
  from clipjax.text.tokenizer import Tokenizer
  from clipjax.train.loop import trim_text_padding
  model, clip = clipjax.create_model("ViT-T-16-test")
  scenes = [SyntheticScenes(16, resolution=32)[i] for i in range(16)]
  tok = Tokenizer()
  batch = {"image": np.random.default_rng(0).normal(size=(16, 32, 32, 3)).astype(np.float32),
           "caption": tok([s["caption"] for s in scenes]),
           "dialogue": tok([f"Q: {q} A: {a}" for s in scenes for q, a in s["dialogue"][:1]]),
           "image_id": np.arange(16)}
  trimmed = trim_text_padding(batch, get_method("draft").text_fields)
  assert trimmed["caption"].shape[1] < 77 and trimmed["caption"].shape[1] % 8 == 0
  cfg = load_config("draft")
  loss_fn = jax.jit(get_method("draft").objective(model, make_mesh(), run_options(cfg)).loss_fn)
  key = jax.random.key(0)
  full, _ = loss_fn({"clip": clip}, batch, key)
  cut, _ = loss_fn({"clip": clip}, trimmed, key)
  np.testing.assert_allclose(float(cut), float(full), rtol=1e-5)


def test_multitask_stages_learn(tmp_path):
  """jina-style stage 1 (text pairs + captions) from scratch, then stage 3 (triplets + long
  captions, text context 128 interpolated from stage 1's 77) from its export."""
  import json
  cfg = load_config("multitask", total_steps=40, **{"data.text_batch_size": 64})
  cfg.data.text = cfg.data.train
  stage1 = fit(cfg, tmp_path / "stage1")
  assert held_out_r1(stage1["model"], stage1["params"]["clip"]) >= 3 * CHANCE
  path = tmp_path / "stage1.safetensors"
  clipjax.export_openclip(stage1["params"]["clip"], "ViT-T-16-test", path)
  stage3 = config_file("multitask", "stage=3")
  assert stage3.data.num_negatives == 1 and stage3.data.caption_field == "long_caption"
  cfg = load_config("multitask", total_steps=15, **{
      "data.text_batch_size": 64, "data.num_negatives": 1, "data.caption_field": "long_caption",
      "model.context_length": 128, "model.checkpoint": str(path)})
  cfg.data.text = cfg.data.train
  result = fit(cfg, tmp_path / "stage3")
  model, clip = result["model"], result["params"]["clip"]
  assert model.cfg.text.context_length == 128 and clip["positional_embedding"].shape[0] == 128
  assert held_out_r1(model, clip) >= 3 * CHANCE
  logged = [json.loads(line) for line in (tmp_path / "stage3" / "metrics.jsonl").open()]
  assert {"text_text", "text_image"} <= set(logged[-1])


@pytest.mark.parametrize("name", ["draft", "three_tower"])
def test_frozen_tower_cache_matches_the_towers(base_clip, tmp_path, name):
  """data.cache_frozen: DRAFT (cached image tower) and CLIP-3Modal (cached image and caption
  towers) follow the same loss curve as running the frozen towers (float32 rounding: rtol
  1e-4), with one table row per unique image / record."""
  import json
  _, checkpoint = base_clip
  curves = {}
  for cached in (False, True):
    cfg = load_config(name, **{"model.checkpoint": checkpoint, "total_steps": 4,
                               "log_every": 1, "data.cache_frozen": cached,
                               "data.train.size": 512})
    fit(cfg, tmp_path / str(cached))
    curves[cached] = [json.loads(line)["loss"]
                      for line in (tmp_path / str(cached) / "metrics.jsonl").open()]
  np.testing.assert_allclose(curves[True], curves[False], rtol=1e-4)
  cache = tmp_path / "True" / "frozen_cache"
  images, = cache.glob("images-*")
  table = EmbeddingTable(images)
  assert len(table) == 512 and table.dim == 64  # one row per unique image
  tables = {p.name.split("-")[0]: np.load(p) for p in cache.glob("*.npz")}
  if name == "three_tower":
    assert tables["captions"]["embeddings"].shape == (512, 64)  # one row per record
  else:
    assert "captions" not in tables  # DRAFT trains its text tower


def test_cache_frozen_needs_a_frozen_image_tower():
  from clipjax.train.validate import validate
  with pytest.raises(ValueError, match="cache_frozen needs a frozen image tower"):
    validate(load_config("clip", **{"data.cache_frozen": True}))
  with pytest.raises(ValueError, match="cache_frozen needs a frozen image tower"):
    validate(load_config("lit", **{"data.cache_frozen": True, "freeze": ("^clip/visual/conv1",)}))
  validate(load_config("lit", **{"data.cache_frozen": True}))
