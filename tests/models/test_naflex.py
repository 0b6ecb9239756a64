"""SigLIP 2 NaFlex: the tower against transformers' Siglip2Model (PyTorch) with the same random
weights, fed Siglip2ImageProcessor's arrays directly; the position resize against torch's
antialiased bilinear interpolate; the preprocessing against transformers' processors; loading
and exporting transformers folders; the registry against the published configs."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import rel_err, tiny_siglip2_hf_config
from PIL import Image

import clipjax
from clipjax.convert.io import CheckpointError
from clipjax.convert.load import create_model_and_transforms, model_transform
from clipjax.data.naflex import naflex_transform, size_for_max_patches, stack_examples
from clipjax.models import create_model, get_model_config
from clipjax.models.naflex import resized_positions

transformers = pytest.importorskip("transformers")
from transformers.models.siglip2.image_processing_pil_siglip2 import (  # noqa: E402
  Siglip2ImageProcessorPil,
)

ARCH = "ViT-T-16-SigLIP2-NaFlex-test"
# Observed 1e-6 relative (image and text): float32 with other matmul kernels and orders.
TOL = 1e-5
# 1:6, 4:1, square, tiny (upsampled) and one large photo-like size
SIZES = ((60, 360), (200, 50), (100, 100), (7, 9), (480, 640))


def _images(sizes=SIZES, seed=0):
  rng = np.random.default_rng(seed)
  return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
  """A transformers Siglip2Model with random weights (fixed seed), saved as a folder."""
  torch.manual_seed(0)
  model = transformers.Siglip2Model(tiny_siglip2_hf_config()).eval()
  with torch.no_grad():  # HF's init leaves these at one value; make them tell a swap
    model.vision_model.embeddings.position_embedding.weight.normal_()
    model.vision_model.head.probe.normal_()
  path = tmp_path_factory.mktemp("siglip2") / "naflex"
  model.save_pretrained(path)
  return path, model


def _features(model, params, batch):
  batch = {k: jnp.asarray(np.asarray(v)) for k, v in batch.items()}
  return np.asarray(jax.jit(lambda p, b: model.apply({"params": p}, b,
                                                     method=model.encode_image))(params, batch))


@pytest.mark.parametrize("max_num_patches", [16, 40])
def test_tower_equals_transformers_on_its_processor_arrays(hf_folder, max_num_patches):
  path, ref = hf_folder
  model, params, _, _ = create_model_and_transforms(path)
  # the registry entry, by its sizes (the bias is the checkpoint's)
  assert model.cfg.replace(init_logit_bias=-10.0).architecture() == get_model_config(ARCH)
  processor = transformers.Siglip2ImageProcessor(patch_size=16, max_num_patches=max_num_patches)
  inputs = processor(images=_images(), return_tensors="pt")
  shapes = inputs["spatial_shapes"].tolist()
  assert len({tuple(s) for s in shapes}) >= 4  # grids of every aspect (tiny: upsampled)
  with torch.no_grad():
    expected = ref.get_image_features(**inputs).pooler_output.numpy()
  assert rel_err(_features(model, params, inputs), expected) < TOL


def test_text_tower_equals_transformers(hf_folder):
  path, ref = hf_folder
  model, params = clipjax.load_openclip(path)
  ids = np.random.default_rng(1).integers(0, 49408, (3, 16))
  with torch.no_grad():
    expected = ref.get_text_features(input_ids=torch.from_numpy(ids)).pooler_output.numpy()
  ours = model.apply({"params": params}, jnp.asarray(ids, jnp.int32), method=model.encode_text)
  assert rel_err(ours, expected) < TOL
  assert float(params["logit_bias"]) == pytest.approx(float(ref.logit_bias.detach()), abs=0)


def test_padding_patches_are_ignored():
  model, params = create_model(ARCH, seed=1)
  examples = [model_transform(model.cfg, max_num_patches=40)(im) for im in _images()]
  batch = stack_examples(examples)
  pad = batch["pixel_attention_mask"] == 0
  assert pad.any(axis=1).all()  # every image here has padding
  noisy = dict(batch, pixel_values=np.where(pad[..., None], 1e3 * np.random.default_rng(2)
                                            .normal(size=batch["pixel_values"].shape),
                                            batch["pixel_values"]).astype(np.float32))
  np.testing.assert_array_equal(_features(model, params, noisy), _features(model, params, batch))
  # and the valid patches do matter
  touched = dict(batch, pixel_values=batch["pixel_values"] + 0.5 * (~pad)[..., None])
  assert not np.allclose(_features(model, params, touched), _features(model, params, batch))


@pytest.mark.parametrize("rows, cols", [(4, 4), (2, 8), (8, 2), (1, 13), (7, 5), (3, 3)])
def test_position_resize_equals_torch_antialiased_bilinear(rows, cols):
  table = np.random.default_rng(3).normal(size=(4, 4, 8)).astype(np.float32)
  length = max(rows * cols, 20)
  ours = np.asarray(resized_positions(jnp.asarray(table), jnp.array([[rows, cols]]), length))[0]
  ref = torch.nn.functional.interpolate(
      torch.from_numpy(table).permute(2, 0, 1)[None], size=(rows, cols), mode="bilinear",
      align_corners=False, antialias=True)[0].permute(1, 2, 0).reshape(rows * cols, 8).numpy()
  assert rel_err(ours[:rows * cols], ref) < 1e-6


def test_scan_remat_and_bfloat16_compose_with_naflex():
  _, params = create_model(ARCH, seed=4)
  batch = stack_examples([model_transform(get_model_config(ARCH))(im) for im in _images()])
  base = _features(clipjax.models.CLIP(get_model_config(ARCH)), params, batch)
  scanned, scanned_params = create_model(ARCH, seed=4, scan_layers=True, remat=True)
  assert rel_err(_features(scanned, scanned_params, batch), base) < 1e-6
  half = clipjax.models.CLIP(get_model_config(ARCH), dtype=jnp.bfloat16)
  assert rel_err(_features(half, params, batch), base) < 5e-2  # bfloat16: ~1e-2 observed


@pytest.mark.parametrize("max_num_patches", [16, 64, 256])
def test_preprocessing_equals_transformers(max_num_patches):
  """Grids and masks equal both transformers backends' for every size drawn; pixels equal the
  PIL backend's bitwise (the same PIL resize) and the torchvision one's within one level."""
  rng = np.random.default_rng(max_num_patches)
  sizes = [tuple(int(x) for x in rng.integers(1, 900, 2)) for _ in range(12)] + list(SIZES)
  images = _images(sizes, seed=5)
  ours = [naflex_transform(16, max_num_patches, (0.5,) * 3, (0.5,) * 3)(im) for im in images]
  pil = Siglip2ImageProcessorPil(patch_size=16, max_num_patches=max_num_patches)(
      images=images, return_tensors="np")
  fast = transformers.Siglip2ImageProcessor(patch_size=16, max_num_patches=max_num_patches)(
      images=images, return_tensors="np")
  batch = stack_examples(ours)
  for ref in (pil, fast):
    np.testing.assert_array_equal(batch["spatial_shapes"], ref["spatial_shapes"])
    np.testing.assert_array_equal(batch["pixel_attention_mask"], ref["pixel_attention_mask"])
  np.testing.assert_array_equal(batch["pixel_values"], pil["pixel_values"])
  assert np.abs(batch["pixel_values"] - fast["pixel_values"]).max() <= 2 / 255 + 1e-6
  for (h, w), shape in zip(sizes, batch["spatial_shapes"]):
    assert shape.prod() <= max_num_patches
    assert size_for_max_patches(h, w, 16, max_num_patches) == tuple(16 * shape)


def test_uint8_examples_normalise_on_device_to_the_float_ones():
  cfg = get_model_config(ARCH)
  image = _images()[0]
  as_float = model_transform(cfg)(image)
  as_uint8 = model_transform(cfg, uint8=True)(image)
  assert as_uint8["pixel_values"].dtype == np.uint8
  flat = cfg.image_preprocess.normalize_on_device(
      jnp.asarray(as_uint8["pixel_values"]).reshape(-1, 3))
  valid = as_float["pixel_attention_mask"] == 1
  np.testing.assert_array_equal(np.asarray(flat).reshape(as_float["pixel_values"].shape)[valid],
                                as_float["pixel_values"][valid])


def test_export_round_trip_through_transformers(tmp_path):
  model, params = create_model(ARCH, seed=6)
  out = clipjax.export_hf(params, model.cfg, tmp_path / "hf")
  ref = transformers.Siglip2Model.from_pretrained(out).eval()
  processor = transformers.AutoImageProcessor.from_pretrained(out)
  assert (processor.max_num_patches, processor.patch_size) == (16, 16)
  inputs = processor(images=_images(), return_tensors="pt")
  with torch.no_grad():
    expected = ref.get_image_features(**inputs).pooler_output.numpy()
  assert rel_err(_features(model, params, inputs), expected) < TOL
  back_model, back = clipjax.load_openclip(f"local-dir:{out}")
  assert back_model.cfg.architecture() == model.cfg.architecture()
  jax.tree.map(np.testing.assert_array_equal, back, params)
  # the folder's processor decides the eval sequence length (here 49, not the default 16)
  config = json.loads((out / "preprocessor_config.json").read_text())
  (out / "preprocessor_config.json").write_text(json.dumps(dict(config, max_num_patches=49)))
  *_, eval_tf = clipjax.create_model_and_transforms(f"local-dir:{out}")
  assert eval_tf(_images()[0])["pixel_values"].shape[0] == 49
  # and through open_clip's layout (timm's NaFlexVit names: visual.trunk.embeds.*)
  clipjax.export_openclip(params, model.cfg, tmp_path / "oc.safetensors")
  assert json.loads((tmp_path / "oc.json").read_text())["vision_cfg"]["timm_model_name"] == \
      "naflexvit_tiny_test_patch16_siglip"
  jax.tree.map(np.testing.assert_array_equal, clipjax.load_openclip(tmp_path / "oc.safetensors")[1],
               params)


# The published transformers configs (config.json of google/siglip2-{base,so400m}-patch16-naflex).
PUBLISHED = {
    "ViT-B-16-SigLIP2-NaFlex": dict(
        text=dict(vocab_size=256000, hidden_size=768, intermediate_size=3072,
                  num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=64),
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, patch_size=16, num_patches=256)),
    "ViT-SO400M-16-SigLIP2-NaFlex": dict(
        text=dict(vocab_size=256000, hidden_size=1152, intermediate_size=4304,
                  num_hidden_layers=27, num_attention_heads=16, max_position_embeddings=64),
        vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                    num_attention_heads=16, patch_size=16, num_patches=256)),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_registry_entries_match_the_published_configs(name, tmp_path):
  from clipjax.convert.hf_siglip import hf_siglip_config
  from clipjax.convert.hf_siglip_load import config_from_hf_siglip
  hf = transformers.Siglip2Config(text_config=PUBLISHED[name]["text"],
                                  vision_config=PUBLISHED[name]["vision"])
  assert config_from_hf_siglip(hf.to_dict()) == get_model_config(name)
  ours = hf_siglip_config(get_model_config(name)).to_dict()
  for tower in ("text", "vision"):
    for key, value in PUBLISHED[name][tower].items():
      assert ours[f"{tower}_config"][key] == value, (tower, key)
  # transformers' own Siglip2VisionConfig defaults are the B/16 NaFlex tower
  if "ViT-B" in name:
    defaults = transformers.Siglip2VisionConfig().to_dict()
    assert all(defaults[k] == v for k, v in PUBLISHED[name]["vision"].items())


def test_wrong_inputs_are_named():
  model, params = create_model(ARCH)
  with pytest.raises(ValueError, match="NaFlex tower: it takes a dict"):
    model.apply({"params": params}, jnp.zeros((1, 64, 64, 3)), method=model.encode_image)
  with pytest.raises(ValueError, match=r"pixel_values \[N, L, 768\]"):
    model.apply({"params": params}, {"pixel_values": jnp.zeros((1, 16, 3)),
                                     "pixel_attention_mask": jnp.ones((1, 16)),
                                     "spatial_shapes": jnp.ones((1, 2), jnp.int32)},
                method=model.encode_image)
  fixed, fixed_params = create_model("ViT-T-16-SigLIP2-test")
  with pytest.raises(ValueError, match="NaFlex batches are for NaFlex towers"):
    fixed.apply({"params": fixed_params}, stack_examples([model_transform(model.cfg)(
        _images()[0])]), method=fixed.encode_image)


def test_a_folder_without_weights_is_a_checkpoint_error(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(tiny_siglip2_hf_config().to_dict()))
  with pytest.raises(CheckpointError, match="SigLIP config.json but no model.safetensors"):
    clipjax.load_openclip(tmp_path)


def test_loads_from_the_hub_cache_as_hf_hub_name(hf_folder, tmp_path):
  """`hf-hub:google/siglip2-base-patch16-naflex`-style names read huggingface_hub's cache layout
  (models--ORG--NAME/{refs/main, snapshots/REV}); offline here (conftest)."""
  path, ref = hf_folder
  root = tmp_path / "hub" / "models--google--siglip2-tiny-naflex"
  revision = "0123456789abcdef0123456789abcdef01234567"
  (root / "refs").mkdir(parents=True)
  (root / "refs" / "main").write_text(revision)
  snapshot = root / "snapshots" / revision
  snapshot.mkdir(parents=True)
  for name in ("config.json", "model.safetensors"):
    (snapshot / name).write_bytes((path / name).read_bytes())
  model, params = clipjax.load_openclip("hf-hub:google/siglip2-tiny-naflex",
                                        cache_dir=str(tmp_path / "hub"))
  inputs = transformers.Siglip2ImageProcessor(patch_size=16, max_num_patches=16)(
      images=_images(), return_tensors="pt")
  with torch.no_grad():
    expected = ref.get_image_features(**inputs).pooler_output.numpy()
  assert rel_err(_features(model, params, inputs), expected) < TOL


def test_the_folders_gemma_tokenizer_is_used_and_exported(hf_folder, tmp_path):
  from conftest import write_siglip_tokenizer
  path, _ = hf_folder
  folder = tmp_path / "with_tokenizer"
  folder.mkdir()
  for name in ("config.json", "model.safetensors"):
    (folder / name).write_bytes((path / name).read_bytes())
  write_siglip_tokenizer(folder, "gemma")
  model, params = clipjax.load_openclip(folder)
  assert model.cfg.text.hf_tokenizer_name == str(folder)
  ours = clipjax.get_tokenizer(model.cfg)(["a photo of a cat"])
  theirs = transformers.AutoTokenizer.from_pretrained(folder)(
      ["a photo of a cat"], padding="max_length", max_length=16, truncation=True)["input_ids"]
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
  out = clipjax.export_hf(params, model.cfg, tmp_path / "export")
  processor = transformers.Siglip2Processor.from_pretrained(out)
  assert processor.tokenizer(["a photo of a cat"], padding="max_length",
                             max_length=16)["input_ids"] == theirs


def test_a_fixed_resolution_siglip_folder_loads_back(tmp_path):
  """transformers SiglipModel folders (fixed-resolution SigLIP / SigLIP 2) load too: exported
  from clipjax, read back to the same architecture and parameters, features equal to
  transformers' on the same pixels."""
  model, params = create_model("ViT-T-16-SigLIP2-test", seed=7)
  out = clipjax.export_hf(params, model.cfg, tmp_path / "siglip")
  assert json.loads((out / "config.json").read_text())["model_type"] == "siglip"
  back_model, back = clipjax.load_openclip(out)
  assert back_model.cfg.architecture() == model.cfg.architecture()
  jax.tree.map(np.testing.assert_array_equal, back, params)
  pixels = np.random.default_rng(8).normal(size=(2, 3, 32, 32)).astype(np.float32)
  ref = transformers.SiglipModel.from_pretrained(out).eval()
  with torch.no_grad():
    expected = ref.get_image_features(pixel_values=torch.from_numpy(pixels)).pooler_output
  ours = back_model.apply({"params": back}, jnp.asarray(pixels.transpose(0, 2, 3, 1)),
                          method=back_model.encode_image)
  assert rel_err(ours, expected.numpy()) < TOL
