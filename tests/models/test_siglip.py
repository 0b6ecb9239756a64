"""SigLIP / SigLIP 2 towers against open_clip + timm (PyTorch) with the same random weights,
float32; their registry entries against timm's trunks; conversion both ways."""
import jax
import jax.numpy as jnp
import numpy as np
import open_clip
import pytest
import torch
from conftest import (
  make_openclip_model,
  rel_err,
  torch_state_dict,
  write_siglip_tokenizer,
)

from clipjax.convert.io import CheckpointError
from clipjax.convert.openclip import (
  infer_config,
  params_to_state_dict,
  state_dict_to_params,
)
from clipjax.models import CLIP, create_model, get_model_config, list_models
from clipjax.models.registry import CLIPJAX_ONLY
from clipjax.models.timm_trunks import TIMM_SIGLIP_TRUNKS, timm_trunk

# Observed ~1e-6 (tiny) to ~2e-6 (ViT-B-16): different matmul kernels and summation orders.
TOL = 1e-5
SIGLIP = [a for a in list_models() if "SigLIP" in a and a not in CLIPJAX_ONLY]  # open_clip's


def test_every_open_clip_siglip_architecture_is_registered():
  theirs = {n for n in open_clip.list_models() if "SigLIP" in n and not n.startswith("nllb")}
  assert len(theirs) == 26 and set(SIGLIP) == theirs


def _ids(cfg, rows=3, real=10, seed=1):
  """Random token ids of the full context, a real prefix and padding 0 after it (as open_clip's
  HFTokenizer pads), plus one row without padding."""
  ids = np.random.default_rng(seed).integers(1, cfg.text.vocab_size,
                                             size=(rows, cfg.text.context_length))
  ids[:-1, real:] = 0
  return ids


def _check_parity(cfg, ref):
  params = state_dict_to_params(torch_state_dict(ref), cfg)
  model = CLIP(cfg)
  size = cfg.vision.image_size
  images = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
  ids = _ids(cfg)
  with torch.no_grad():
    ref_img = ref.encode_image(torch.from_numpy(images)).numpy()
    ref_txt = ref.encode_text(torch.from_numpy(ids)).numpy()
  img = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))(
      params, jnp.asarray(images.transpose(0, 2, 3, 1)))
  txt = jax.jit(lambda p, t: model.apply({"params": p}, t, method=model.encode_text))(
      params, jnp.asarray(ids, jnp.int32))
  assert rel_err(img, ref_img) < TOL
  assert rel_err(txt, ref_txt) < TOL
  assert float(params["logit_bias"]) == pytest.approx(float(ref.logit_bias.detach()), abs=0)
  return params


@pytest.mark.parametrize("gelu_tanh, image_size", [(True, 32), (False, 36)])
def test_tiny_siglip_matches_open_clip_and_exports_strictly(gelu_tanh, image_size):
  """Both GELU forms; 36 px with 16 px patches truncates to a 2 x 2 grid as timm's conv does
  (the SO400M-14 at 384 px case). The export loads into open_clip with strict=True."""
  cfg = get_model_config("ViT-T-16-SigLIP2-test").replace(
      vision={"gelu_tanh": gelu_tanh, "image_size": image_size}, text={"gelu_tanh": gelu_tanh})
  ref = make_openclip_model(cfg)
  params = _check_parity(cfg, ref)
  twin = make_openclip_model(cfg, seed=1)
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in params_to_state_dict(params).items()},
                       strict=True)
  for a, b in zip(ref.state_dict().values(), twin.state_dict().values()):
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ~40 s each on 2 cores (a 256k-token embedding in SigLIP 2); the tiny test above takes the
# same code path, every registry entry is checked against timm's trunk sizes below.
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ViT-B-16-SigLIP", "ViT-B-16-SigLIP2"])
def test_full_size_siglip_matches_open_clip(arch):
  _check_parity(get_model_config(arch), make_openclip_model(arch))


@pytest.mark.parametrize("family", sorted(TIMM_SIGLIP_TRUNKS))
def test_trunk_table_matches_timm(family):
  """Patch, width, depth, heads, MLP width, activation and position count of every timm SigLIP
  trunk we register, read from timm's own model (built on the meta device, no memory)."""
  import timm
  names = {a: get_model_config(a).vision.timm_model_name for a in SIGLIP}
  for name in sorted({n for n in names.values() if n.rpartition("_")[0] == family}):
    with torch.device("meta"):
      trunk = timm.create_model(name, num_classes=0, global_pool="map")
    ours = timm_trunk(name)
    block = trunk.blocks[0]
    assert (ours.patch_size, ours.width, ours.layers, ours.heads, ours.mlp_width) == (
        trunk.patch_embed.patch_size[0], trunk.embed_dim, len(trunk.blocks),
        block.attn.num_heads, block.mlp.fc1.out_features), name
    tanh = type(block.mlp.act).__name__ == "GELUTanh" or getattr(block.mlp.act, "approximate",
                                                                   "none") == "tanh"
    assert ours.gelu_tanh == tanh, name
    assert trunk.pos_embed.shape[1] == ours.grid ** 2, name


def test_siglip_state_dict_is_recognised_and_a_clip_one_is_refused_by_name():
  model, params = create_model("ViT-T-16-SigLIP2-test")
  sd = params_to_state_dict(params)
  assert infer_config(sd) == model.cfg.replace(init_logit_bias=float(params["logit_bias"]))
  _, clip_params = create_model("ViT-T-16-test")
  with pytest.raises(CheckpointError, match=r"the checkpoint has a CLIP ViT image tower "
                     r"\(visual.transformer.\*\), the architecture expects a timm image tower"):
    state_dict_to_params(params_to_state_dict(clip_params), model.cfg)


def test_bidirectional_text_tower_refuses_trimmed_ids():
  model, params = create_model("ViT-T-16-SigLIP2-test")
  assert not model.cfg.text.trimmable
  with pytest.raises(ValueError, match=r"reads every padding position: pass ids padded to the "
                     r"context length, \[N, 16\], got \(2, 8\)"):
    model.apply({"params": params}, jnp.ones((2, 8), jnp.int32), method=model.encode_text)


def test_evaluation_and_training_feed_siglip_pixels():
  """Non-square photos through clipjax's evaluation (`embed_images`, grain pipeline) and the
  training step's `embed_image_text` give open_clip's embeddings with SigLIP preprocessing
  (squash resize, mean/std 0.5), not the OpenAI crop and statistics of CLIP towers."""
  from PIL import Image

  from clipjax.data.pipeline import PrepareExample
  from clipjax.evaluate.embed import clip_encoders, embed_images
  from clipjax.methods.context import Context, embed_image_text
  from clipjax.parallel.mesh import make_mesh
  cfg = get_model_config("ViT-T-16-SigLIP2-test")
  assert cfg.image_preprocess.resize_mode == "squash" and cfg.image_preprocess.mean == (0.5,) * 3
  ref = make_openclip_model(cfg)
  params = state_dict_to_params(torch_state_dict(ref), cfg)
  model = CLIP(cfg)
  rng = np.random.default_rng(0)
  photos = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((48, 80, 3),
                                                                           (70, 40, 3))]
  theirs = open_clip.image_transform(32, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3,
                                     resize_mode="squash", interpolation="bicubic")
  with torch.no_grad():
    want = ref.encode_image(torch.stack([theirs(Image.fromarray(p)) for p in photos])).numpy()
  want /= np.linalg.norm(want, axis=-1, keepdims=True)
  evaluated = embed_images(clip_encoders(model, params), [{"image": p} for p in photos],
                           num_workers=0)["embeddings"]
  assert rel_err(evaluated, want) < TOL
  prepare = PrepareExample(32, train=False, text_fields=(),
                           preprocess=cfg.image_preprocess.transform_kwargs())
  pixels = np.stack([prepare({"image": p})["image"] for p in photos])
  assert pixels.dtype == np.uint8  # as the training pipeline ships them
  ctx = Context(model, make_mesh(devices=jax.devices()[:1]), None)
  trained = embed_image_text(ctx, {"clip": params}, {"image": pixels, "caption_embedding": 0})
  assert rel_err(trained["image"], want) < TOL



@pytest.mark.parametrize("variant", ["siglip2", "siglip_no_text_projection"])
def test_hf_export_loads_in_transformers_siglip_model(tmp_path, variant):
  """export_hf of a SigLIP model: transformers' SiglipModel gives our image and text features
  (tolerance as above) and logits with our scale and bias; a tower without text projection
  (SO400M-16-SigLIP-i18n) gets an exact identity head. The image processor squashes (bicubic)
  with mean/std 0.5; a local tokenizer directory is written next to the weights."""
  import transformers

  from clipjax.convert.hf import export_hf
  cfg = get_model_config("ViT-T-16-SigLIP2-test")
  if variant == "siglip_no_text_projection":
    cfg = cfg.replace(vision={"gelu_tanh": False}, text={"gelu_tanh": False, "proj_type": "none",
                                                         "proj_bias": False})
  cfg = cfg.replace(text={"hf_tokenizer_name": write_siglip_tokenizer(tmp_path / "tok", "t5"),
                          "vocab_size": 49408})
  model, params = create_model(cfg, seed=3)
  out = export_hf(params, cfg, tmp_path / "hf")
  hf = transformers.SiglipModel.from_pretrained(out).eval()
  size = cfg.vision.image_size
  images = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
  ids = _ids(cfg)
  with torch.no_grad():
    want_img = hf.get_image_features(pixel_values=torch.from_numpy(images))
    want_txt = hf.get_text_features(input_ids=torch.from_numpy(ids))
    want_img = getattr(want_img, "pooler_output", want_img).numpy()
    want_txt = getattr(want_txt, "pooler_output", want_txt).numpy()
    logits = hf(input_ids=torch.from_numpy(ids),
                pixel_values=torch.from_numpy(images)).logits_per_image.numpy()
  img = model.apply({"params": params}, jnp.asarray(images.transpose(0, 2, 3, 1)),
                    method=model.encode_image)
  txt = model.apply({"params": params}, jnp.asarray(ids, jnp.int32), method=model.encode_text)
  assert rel_err(img, want_img) < TOL and rel_err(txt, want_txt) < TOL
  norm = lambda x: np.asarray(x) / np.linalg.norm(x, axis=-1, keepdims=True)
  ours = (np.exp(float(params["logit_scale"])) * norm(img) @ norm(txt).T
          + float(params["logit_bias"]))
  assert rel_err(ours, logits) < TOL
  processor = transformers.AutoProcessor.from_pretrained(out)
  assert processor.image_processor.size == {"height": size, "width": size}
  assert list(processor.image_processor.image_mean) == [0.5] * 3
  assert processor.tokenizer("a cat").input_ids == transformers.AutoTokenizer.from_pretrained(
      cfg.text.tokenizer_dir)("a cat").input_ids
