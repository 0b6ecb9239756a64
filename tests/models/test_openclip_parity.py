"""Our Flax towers against open_clip (PyTorch) with the same random weights, float32."""
import jax
import jax.numpy as jnp
import numpy as np
import open_clip
import pytest
import torch
from conftest import make_openclip_model, rel_err, torch_state_dict

from clipjax.convert.openclip import (
  params_to_state_dict,
  resize_positional_embedding,
  state_dict_to_params,
)
from clipjax.models import CLIP, create_model, get_model_config, list_models
from clipjax.models.registry import CLIPJAX_ONLY
from clipjax.models.timm_trunks import timm_trunk
from clipjax.models.tokenizers import get_tokenizer

# Observed ~2e-6 (ViT-B-32) to ~6e-6 (ViT-L-14): different matmul kernels and summation orders.
TOL = 1e-5
CAPTIONS = ["a photo of a cat", "Two dogs play in the snow, at night!", "",
            "a very long caption " * 30, "naïve café 東京 🎉"]


def _encode(model, params, images_nchw, ids):
  images = jnp.asarray(images_nchw.transpose(0, 2, 3, 1))
  img = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))(params, images)
  txt = jax.jit(lambda p, t: model.apply({"params": p}, t, method=model.encode_text))(
      params, jnp.asarray(ids, jnp.int32))
  return np.asarray(img), np.asarray(txt)


# ViT-L-14 (24 blocks of width 1024, ~60 s on 2 cores) runs with `-m slow`: ViT-B-16 and
# ViT-B-32 take the same code path (patch embedding, pre-norm blocks, attention pooling).
@pytest.mark.parametrize("arch", ["ViT-T-16-test", "ViT-B-32", "ViT-B-32-quickgelu", "ViT-B-16",
                                  pytest.param("ViT-L-14", marks=pytest.mark.slow),
                                  "RN-T-test", "RN50"])
def test_embeddings_and_logits_match_openclip(arch):
  ref = make_openclip_model(arch)
  cfg = get_model_config(arch)
  params = state_dict_to_params(torch_state_dict(ref), cfg)
  model = CLIP(cfg)
  size = cfg.vision.image_size
  images = np.random.default_rng(0).normal(size=(3, 3, size, size)).astype(np.float32)
  ids = open_clip.get_tokenizer(arch)(CAPTIONS).numpy()
  with torch.no_grad():
    ref_img = ref.encode_image(torch.from_numpy(images)).numpy()
    ref_txt = ref.encode_text(torch.from_numpy(ids)).numpy()
    ref_logits, _ = ref.get_logits(torch.from_numpy(images), torch.from_numpy(ids))
  img, txt = _encode(model, params, images, ids)
  assert rel_err(img, ref_img) < TOL
  assert rel_err(txt, ref_txt) < TOL
  norm = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  logits = np.exp(float(params["logit_scale"])) * norm(img) @ norm(txt).T
  assert rel_err(logits, ref_logits.numpy()) < TOL


# open_clip's other plain ViTs at 2 blocks per tower and their published widths: B-plus (896
# wide at 240 px, a 640-wide 10-head text tower), M-16-alt (layer scale, here on the text tower's
# branches too), S-32-alt (a 256-wide 4-head text tower).
@pytest.mark.parametrize("arch, text", [("ViT-B-16-plus-240", {}),
                                        ("ViT-M-16-alt", {"ls_init_value": 1e-4}),
                                        ("ViT-S-32-alt", {})])
def test_plain_vit_variants_match_openclip_at_reduced_depth(arch, text):
  cfg = get_model_config(arch).replace(vision={"layers": 2}, text={"layers": 2, **text})
  ref = make_openclip_model(cfg)  # every parameter perturbed: layer-scale gammas differ per channel
  sd = torch_state_dict(ref)
  if cfg.vision.ls_init_value is not None:
    assert "visual.transformer.resblocks.1.ls_2.gamma" in sd
  params = state_dict_to_params(sd, cfg)
  size = cfg.vision.image_size
  images = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
  ids = open_clip.get_tokenizer("ViT-B-32")(CAPTIONS).numpy()
  with torch.no_grad():
    ref_img = ref.encode_image(torch.from_numpy(images)).numpy()
    ref_txt = ref.encode_text(torch.from_numpy(ids)).numpy()
  img, txt = _encode(CLIP(cfg), params, images, ids)
  assert img.shape == (2, cfg.embed_dim) and txt.shape == (len(CAPTIONS), cfg.embed_dim)
  assert rel_err(img, ref_img) < TOL
  assert rel_err(txt, ref_txt) < TOL


@pytest.mark.parametrize("arch", [a for a in list_models() if a not in CLIPJAX_ONLY])
def test_registry_matches_openclip_configs(arch):
  """Every registry entry has exactly the hyper-parameters of open_clip's JSON of that name.
  Of a timm tower's options, the training-only dropouts are not architecture (MobileCLIP's
  `timm_drop_path`), and `timm_pool: ""` means timm's default pooling, which we write out;
  MobileCLIP-B spells out the default `no_causal_mask: false`, which we leave out."""
  theirs = open_clip.get_model_config(arch)
  if theirs["text_cfg"].get("no_causal_mask") is False:
    theirs = dict(theirs, text_cfg={k: v for k, v in theirs["text_cfg"].items()
                                    if k != "no_causal_mask"})
  vision = theirs["vision_cfg"]
  if "timm_model_name" in vision:
    vision = {k: v for k, v in vision.items() if k not in ("timm_drop", "timm_drop_path")}
    if vision.get("timm_pool") == "":
      vision["timm_pool"] = timm_trunk(vision["timm_model_name"]).pool
    theirs = dict(theirs, vision_cfg=vision)
  assert get_model_config(arch).to_openclip_json() == theirs


def _bert_tokenizer(path) -> str:
  """A small uncased WordPiece (BERT) tokenizer trained locally (no hub), saved to `path`."""
  import transformers
  from tokenizers import BertWordPieceTokenizer
  wordpiece = BertWordPieceTokenizer(lowercase=True)
  wordpiece.train_from_iterator(CAPTIONS * 5, vocab_size=200, min_frequency=1)
  transformers.BertTokenizerFast(tokenizer_object=wordpiece._tokenizer).save_pretrained(path)
  return str(path)


def test_clipa_matches_openclip(tmp_path):
  """ViT-L-14-CLIPA at 2 blocks per tower: the image tower without ln_pre, averaging patch
  tokens before ln_post; BERT ids with the separator stripped to 0 (open_clip's HFTokenizer,
  strip_sep_token) read by a bidirectional text tower that pools the last position."""
  path = _bert_tokenizer(tmp_path / "bert")
  cfg = get_model_config("ViT-L-14-CLIPA").replace(
      vision={"layers": 2, "image_size": 56}, text={"layers": 2, "hf_tokenizer_name": path})
  tokenizer = get_tokenizer(cfg)
  ids = tokenizer(CAPTIONS)
  theirs = open_clip.tokenizer.HFTokenizer(path, context_length=32, strip_sep_token=True)(CAPTIONS)
  np.testing.assert_array_equal(ids, theirs.numpy())
  bert = tokenizer.tokenizer
  assert (bert(CAPTIONS[:1])["input_ids"][0][-1] == bert.sep_token_id  # there was a [SEP] ...
          and ids.shape == (len(CAPTIONS), 32) and not (ids == bert.sep_token_id).any())
  assert (ids[:, 0] == bert.cls_token_id).all() and (ids[2, 1:] == 0).all()  # ... now 0s
  ref = make_openclip_model(cfg)
  sd = torch_state_dict(ref)
  assert "visual.ln_pre.weight" not in sd
  params = state_dict_to_params(sd, cfg)
  images = np.random.default_rng(0).normal(size=(2, 3, 56, 56)).astype(np.float32)
  with torch.no_grad():
    ref_img = ref.encode_image(torch.from_numpy(images)).numpy()
    ref_txt = ref.encode_text(torch.from_numpy(ids).long()).numpy()
  img, txt = _encode(CLIP(cfg), params, images, ids)
  assert rel_err(img, ref_img) < TOL
  assert rel_err(txt, ref_txt) < TOL


# CLIPA's ln_post before pooling, MetaCLIP 2's text pooling (the first `eos_id`, not the largest
# id) and first-token pooling, at 2 blocks of ViT-L width.
@pytest.mark.parametrize("vision, text", [
    ({"pool_type": "avg"}, {"pool_type": "eos", "eos_id": 2}),
    ({"no_ln_pre": True}, {"pool_type": "first"})])
def test_pooling_options_match_openclip(vision, text):
  cfg = get_model_config("ViT-L-14").replace(
      vision={"layers": 2, "image_size": 56, **vision}, text={"layers": 2, **text})
  ref = make_openclip_model(cfg)
  sd = torch_state_dict(ref)
  assert ("visual.ln_pre.weight" in sd) != bool(vision.get("no_ln_pre"))
  params = state_dict_to_params(sd, cfg)
  images = np.random.default_rng(0).normal(size=(2, 3, 56, 56)).astype(np.float32)
  ids = np.random.default_rng(1).integers(3, 49000, (4, 77))
  ids[:, [9, 30, 50, 76]] = 2  # eos ids earlier than the largest id: argmax would pick another
  ids[3, :] = 7  # a row without eos: open_clip pools position 0
  with torch.no_grad():
    ref_img = ref.encode_image(torch.from_numpy(images)).numpy()
    ref_txt = ref.encode_text(torch.from_numpy(ids)).numpy()
  img, txt = _encode(CLIP(cfg), params, images, ids)
  assert rel_err(img, ref_img) < TOL
  assert rel_err(txt, ref_txt) < TOL


def test_unknown_pooling_is_a_clear_error():
  with pytest.raises(ValueError, match="vision pool_type 'max' is not supported; supported: tok, "
                                       "avg"):
    get_model_config("ViT-B-32").replace(vision={"pool_type": "max"})
  with pytest.raises(ValueError, match="text pool_type 'mean' is not supported"):
    get_model_config("ViT-B-32").replace(text={"pool_type": "mean"})


@pytest.mark.parametrize("arch", ["ViT-e-14", "ViT-H-14-378", "ViT-bigG-14", "ViT-M-16-alt",
                                  "ViT-bigG-14-worldwide", "EVA02-E-14-plus",
                                  "PE-Core-bigG-14-448", "EVA01-g-14-plus",
                                  "ViT-bigG-14-CLIPA-336"])
def test_giant_models_have_openclip_parameter_shapes(arch):
  """Every parameter clipjax creates, in torch's name and layout, has the shape of open_clip's
  state_dict (built on the meta device: no memory, no init), and no key is missing either side."""
  from clipjax.convert.openclip import param_shapes
  from clipjax.models.naming import flatten, torch_key
  layout = {"linear": lambda s: s[::-1], "conv": lambda s: (s[3], s[2], s[0], s[1])}
  ours = {}
  for path, leaf in flatten(param_shapes(get_model_config(arch))).items():
    key, kind = torch_key(path)
    ours[key] = tuple(layout.get(kind, lambda s: s)(tuple(leaf.shape)))
  with torch.device("meta"):
    ref = open_clip.create_model(arch, pretrained=None, device="meta")
  theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
  assert ours == theirs


def test_mlp_and_head_widths_of_large_models():
  """ViT-H/g/bigG use non-64 head widths and non-4 MLP ratios; shapes follow open_clip's int()."""
  from clipjax.convert.openclip import param_shapes
  for arch, heads, mlp in (("ViT-H-14", 16, 5120), ("ViT-g-14", 16, 6144), ("ViT-bigG-14", 16, 8192)):
    cfg = get_model_config(arch)
    assert (cfg.vision.heads, cfg.vision.mlp_width) == (heads, mlp)
    shapes = param_shapes(cfg)
    assert shapes["visual"]["transformer"]["resblocks_0"]["mlp"]["c_fc"]["kernel"].shape == (
        cfg.vision.width, mlp)


def test_unknown_architecture_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown architecture 'ViT-X-99'.*ViT-B-32"):
    create_model("ViT-X-99")


def test_wrong_image_shape_is_a_clear_error():
  model, params = create_model("ViT-T-16-test")
  with pytest.raises(ValueError, match=r"\[N, 32, 32, 3\] \(NHWC\)"):
    model.apply({"params": params}, jnp.zeros((1, 3, 32, 32)), method=model.encode_image)


def test_remat_and_bfloat16_compute():
  """Rematerialisation changes nothing numerically; bfloat16 compute stays close to float32
  with float32 params and float32 outputs."""
  model, params = create_model("ViT-T-16-test")
  images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  ids = jnp.asarray(open_clip.get_tokenizer("ViT-B-32")(CAPTIONS[:4]).numpy(), jnp.int32)

  def loss(p, m):
    img, txt, _ = m.apply({"params": p}, images, ids)
    return jnp.sum(img @ txt.T)

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  g_ref = grad(params, model)
  g_remat = grad(params, CLIP(model.cfg, remat=True))
  # Remat recomputes the forward inside the backward; XLA may fuse it differently, so equal up
  # to float32 rounding relative to each gradient's scale.
  errors = jax.tree.leaves(jax.tree.map(rel_err, g_remat, g_ref))
  assert max(errors) < 1e-5
  bf16 = CLIP(model.cfg, dtype=jnp.bfloat16)
  out32 = jax.jit(model.apply)({"params": params}, images, ids)
  out16 = jax.jit(bf16.apply)({"params": params}, images, ids)
  assert out16[0].dtype == jnp.float32 and out16[1].dtype == jnp.float32
  assert rel_err(out16[0], out32[0]) < 5e-2 and rel_err(out16[1], out32[1]) < 5e-2


def test_long_context_matches_openclip_resize():
  """A 77-position checkpoint loaded with context 248 (docs/methods.md §5): positional embeddings
  equal open_clip's resize_text_pos_embed, and the text tower equals open_clip's model built
  with that context and loaded with the resized state_dict."""
  ref77 = make_openclip_model("ViT-T-16-test")
  sd = torch_state_dict(ref77)
  cfg = get_model_config("ViT-T-16-test").replace(text={"context_length": 248})
  ref248 = make_openclip_model(cfg, seed=1)
  torch_sd = {k: torch.from_numpy(v) for k, v in sd.items()}
  open_clip.model.resize_text_pos_embed(torch_sd, ref248)
  ref248.load_state_dict(torch_sd, strict=True)
  # Same float32 coordinate arithmetic as torch; a few weights still round differently
  # (observed <= 3.2e-7 on entries of magnitude ~0.03).
  np.testing.assert_allclose(resize_positional_embedding(sd["positional_embedding"], 248),
                             torch_sd["positional_embedding"].numpy(), rtol=0, atol=1e-6)
  params = state_dict_to_params(sd, cfg)
  ids = open_clip.get_tokenizer("ViT-B-32", context_length=248)(CAPTIONS).numpy()
  with torch.no_grad():
    ref = ref248.encode_text(torch.from_numpy(ids)).numpy()
  model = CLIP(cfg)
  ours = model.apply({"params": params}, jnp.asarray(ids, jnp.int32), method=model.encode_text)
  assert rel_err(ours, ref) < TOL


def test_padded_length_buckets():
  """Every needed length maps to the smallest bucket of 8 x {1, 2, 3, 4, 6, 8, ...} (or the full
  width) that holds it: 7 shapes for a 77-token context, 10 for 248."""
  from clipjax.models.text import padded_length
  buckets = sorted({8} | {8 * m << k for m in (2, 3) for k in range(8)})
  for width, shapes in ((77, 7), (248, 10)):
    seen = set()
    for needed in range(0, width + 1):
      ids = np.zeros((3, width), np.int64)
      ids[1, :needed] = 5
      got = padded_length(ids)
      assert got == min(width, next(b for b in buckets if b >= max(needed, 1))), (width, needed)
      seen.add(got)
    assert len(seen) == shapes, sorted(seen)
  ids = np.full((2, 77), 1)  # pad id 1 (RoBERTa): counted by its own id
  ids[0, :20] = 7
  assert padded_length(ids, pad_id=1) == 24


def test_trim_padding_is_exact():
  """Dropping columns after the batch's last end-of-text token leaves every embedding equal
  (the causal mask hides later positions from the pooled one)."""
  from clipjax.models.text import trim_padding
  model, params = create_model("ViT-T-16-test")
  ids = open_clip.get_tokenizer("ViT-B-32")(["a cat", "two dogs play in the snow at night"]).numpy()
  trimmed = trim_padding(ids, multiple=8)
  assert trimmed.shape == (2, 16)
  enc = jax.jit(lambda p, t: model.apply({"params": p}, t, method=model.encode_text))
  full = enc(params, jnp.asarray(ids, jnp.int32))
  assert rel_err(enc(params, jnp.asarray(trimmed, jnp.int32)), full) < 1e-6


# CoCa's image tower: attentional pooling (256 queries of width embed_dim over the tokens),
# then ln_post, the first query (or the others' mean) and a square `proj`; the pooler's input
# projections fused when the token width equals embed_dim, separate otherwise.
@pytest.mark.parametrize("width, pool_type", [(768, "tok"), (512, "avg")])
def test_attentional_pooler_matches_openclip(width, pool_type):
  cfg = get_model_config("ViT-B-32").replace(
      vision={"layers": 2, "width": width, "attentional_pool": True, "pool_type": pool_type},
      text={"layers": 2})
  ref = make_openclip_model(cfg)
  sd = torch_state_dict(ref)
  fused = width == cfg.embed_dim
  assert ("visual.attn_pool.attn.in_proj_weight" in sd) == fused
  assert sd["visual.attn_pool.query"].shape == (256, cfg.embed_dim)
  params = state_dict_to_params(sd, cfg)
  images = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
  ids = open_clip.get_tokenizer("ViT-B-32")(CAPTIONS[:2]).numpy()
  with torch.no_grad():
    ref_img = ref.encode_image(torch.from_numpy(images)).numpy()
  img, _ = _encode(CLIP(cfg), params, images, ids)
  assert rel_err(img, ref_img) < TOL
  back = params_to_state_dict(params)
  assert set(back) == set(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
  with pytest.raises(ValueError, match="attentional_pool 'parallel' is not supported"):
    cfg.replace(vision={"attentional_pool": "parallel"})
