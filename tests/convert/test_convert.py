"""Conversion both ways: open_clip files -> params -> open_clip / HF, checked by loading the
exports into open_clip and transformers themselves."""
import json
import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import open_clip
import pytest
import torch
from conftest import REPO, make_openclip_model, rel_err, torch_state_dict

from clipjax.convert.hf import export_hf
from clipjax.convert.io import CheckpointError, load_state_dict, save_state_dict
from clipjax.convert.load import load_openclip
from clipjax.convert.openclip import export_openclip, infer_config, params_to_state_dict
from clipjax.models import create_model, get_model_config

TOL = 1e-5
TINY = "ViT-T-16-test"


@pytest.fixture(scope="module")
def tiny():
  model, params = create_model(TINY, seed=3)
  # perturb LayerNorms/biases/logit scale so no tensor holds a constant init value
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.02 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])
  return model, params


def _assert_params_identical(a, b):
  flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y)), path


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_round_trip_is_bit_identical(tiny, tmp_path, suffix):
  _, params = tiny
  path = tmp_path / f"w{suffix}"
  export_openclip(params, TINY, path)
  _, loaded = load_openclip(path, arch=TINY)
  _assert_params_identical(params, loaded)


@pytest.mark.parametrize("suffix,arch", [(".safetensors", "ViT-B-32"), (".pt", "RN50")])
def test_openclip_loads_export_strictly_and_agrees(tmp_path, suffix, arch):
  """open_clip.create_model(arch, pretrained=path) uses strict key matching (for RN50 that
  includes every BatchNorm's running statistics and `num_batches_tracked`)."""
  ref = make_openclip_model(arch)
  sd_path = tmp_path / "ref.safetensors"
  save_state_dict(torch_state_dict(ref), sd_path)
  model, params = load_openclip(sd_path, arch=arch)
  out = tmp_path / f"export{suffix}"
  assert export_openclip(params, arch, out) == out  # stock architecture: no JSON needed
  reloaded = open_clip.create_model(arch, pretrained=str(out)).eval()
  images = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
  ids = open_clip.get_tokenizer(arch)(["a dog", "a red car on a bridge"])
  sd = reloaded.state_dict()
  assert all(torch.equal(sd[k], v) for k, v in ref.state_dict().items()
             if not k.endswith("num_batches_tracked"))
  with torch.no_grad():
    ref_img = reloaded.encode_image(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    ref_txt = reloaded.encode_text(ids).numpy()
  img = model.apply({"params": params}, images, method=model.encode_image)
  txt = model.apply({"params": params}, jnp.asarray(ids.numpy(), jnp.int32), method=model.encode_text)
  assert rel_err(img, ref_img) < TOL and rel_err(txt, ref_txt) < TOL


def test_nonstock_export_writes_openclip_config(tiny, tmp_path):
  """A clipjax-only config and a longer text context both come with an open_clip JSON."""
  model, params = tiny
  json_path = export_openclip(params, TINY, tmp_path / "tiny_export.safetensors")
  assert json_path == tmp_path / "tiny_export.json"
  open_clip.add_model_config(json_path)
  ref = open_clip.create_model("tiny_export", pretrained=str(tmp_path / "tiny_export.safetensors"))
  ids = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat"])
  with torch.no_grad():
    ref_txt = ref.eval().encode_text(ids).numpy()
  ours = model.apply({"params": params}, jnp.asarray(ids.numpy(), jnp.int32), method=model.encode_text)
  assert rel_err(ours, ref_txt) < TOL

  _, long_params = load_openclip(tmp_path / "tiny_export.safetensors", arch=TINY, context_length=128)
  long_json = export_openclip(long_params, TINY, tmp_path / "tiny_long.safetensors")
  assert json.loads(long_json.read_text())["text_cfg"]["context_length"] == 128
  open_clip.add_model_config(long_json)
  long_ref = open_clip.create_model("tiny_long", pretrained=str(tmp_path / "tiny_long.safetensors"))
  assert long_ref.positional_embedding.shape == (128, 64)


def test_export_of_layer_scale_and_clipa_pooling_round_trips(tmp_path):
  """The new options travel in the exported JSON: open_clip rebuilds the same network from it
  and loads the weights strictly, bit for bit; Hugging Face CLIPModel has none of them, so its
  export is refused by name."""
  cfg = get_model_config(TINY).replace(
      vision={"no_ln_pre": True, "pool_type": "avg", "final_ln_after_pool": True,
              "ls_init_value": 1e-4},
      text={"pool_type": "eos", "eos_id": 2, "ls_init_value": 1e-4})
  model, params = create_model(cfg)
  json_path = export_openclip(params, cfg, tmp_path / "clipa_ls.safetensors")
  written = json.loads(json_path.read_text())
  assert written["vision_cfg"]["pool_type"] == "avg" and written["text_cfg"]["eos_id"] == 2
  open_clip.add_model_config(json_path)
  ref = open_clip.create_model("clipa_ls", pretrained=str(tmp_path / "clipa_ls.safetensors"))
  ours = params_to_state_dict(params)
  assert set(ref.state_dict()) == set(ours)
  assert all(np.array_equal(v.numpy(), ours[k]) for k, v in ref.state_dict().items())
  with pytest.raises(CheckpointError, match="Hugging Face CLIPModel has no layer scale, "
                     "no_ln_pre, vision pool_type 'avg', final_ln_after_pool; export .* with "
                     "export_openclip instead"):
    export_hf(params, cfg, tmp_path / "hf")
  assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("arch", [TINY, "ViT-B-32-quickgelu"])
def test_hf_export_loads_without_missing_keys_and_agrees(tmp_path, arch):
  from transformers import CLIPModel
  ref = make_openclip_model(arch)
  cfg = get_model_config(arch)
  from clipjax.convert.openclip import state_dict_to_params
  from clipjax.models import CLIP
  params = state_dict_to_params(torch_state_dict(ref), cfg)
  model = CLIP(cfg)
  export_hf(params, arch, tmp_path / "hf")
  hf, info = CLIPModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
  size = cfg.vision.image_size
  images = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
  ids = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat", "two dogs in the snow"])
  with torch.no_grad():
    hf_img = hf.eval().get_image_features(
        pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2))).pooler_output.numpy()
    hf_txt = hf.get_text_features(input_ids=ids).pooler_output.numpy()
  img = model.apply({"params": params}, images, method=model.encode_image)
  txt = model.apply({"params": params}, jnp.asarray(ids.numpy(), jnp.int32), method=model.encode_text)
  assert rel_err(img, hf_img) < TOL and rel_err(txt, hf_txt) < TOL
  assert float(hf.logit_scale) == pytest.approx(float(params["logit_scale"]))
  imported, loaded = load_openclip(tmp_path / "hf")  # back under the registry name (QuickGELU
  assert imported.cfg == cfg                         # read from the config's hidden_act)
  _assert_params_identical(params, loaded)
  # The processor files load too, and tokenise ordinary captions as open_clip does.
  from transformers import CLIPProcessor
  processor = CLIPProcessor.from_pretrained(tmp_path / "hf")
  texts = ["a photo of a cat", "two dogs in the snow", "A café, 3 bikes & a red car."]
  hf_ids = processor(text=texts, padding="max_length", max_length=77, return_tensors="np")
  assert np.array_equal(hf_ids["input_ids"], open_clip.get_tokenizer("ViT-B-32")(texts).numpy())
  pixels = processor(images=[np.zeros((40, 50, 3), np.uint8)], return_tensors="np")["pixel_values"]
  assert pixels.shape == (1, 3, size, size)
  # Exports are ordinary files: the umask decides their mode (0644 under the usual 022).
  old = os.umask(0o022)
  try:
    export_hf(params, arch, tmp_path / "hf2")
  finally:
    os.umask(old)
  assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "hf2").iterdir()} == {"0o644"}


def test_metaclip2_exports_to_metaclip2model(tmp_path):
  """Text pooled at the first `eos_id` (MetaCLIP 2 worldwide) exports to transformers'
  MetaClip2Model, which pools there too: its features equal ours, ids with eos earlier than
  the largest id (where CLIP's argmax would pool elsewhere) and a row without eos included."""
  from transformers import MetaClip2Model

  from clipjax.convert.hf import hf_model_class
  from clipjax.models import CLIP
  cfg = get_model_config(TINY).replace(text={"pool_type": "eos", "eos_id": 2})
  assert hf_model_class(cfg) == "MetaClip2Model"
  assert hf_model_class(get_model_config(TINY)) == "CLIPModel"
  _, params = create_model(cfg)
  export_hf(params, cfg, tmp_path / "hf")
  hf, info = MetaClip2Model.from_pretrained(tmp_path / "hf", output_loading_info=True)
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
  ids = np.random.default_rng(1).integers(3, 49000, (3, 77))
  ids[:2, [9, 40]] = 2
  model = CLIP(cfg)
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    hf_txt = hf.eval().get_text_features(input_ids=torch.from_numpy(ids)).pooler_output.numpy()
    hf_img = hf.get_image_features(
        pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2))).pooler_output.numpy()
  txt = model.apply({"params": params}, jnp.asarray(ids, jnp.int32), method=model.encode_text)
  img = model.apply({"params": params}, images, method=model.encode_image)
  assert rel_err(txt, hf_txt) < TOL and rel_err(img, hf_img) < TOL


def test_training_checkpoint_with_module_prefix(tiny, tmp_path):
  _, params = tiny
  sd = {f"module.{k}": torch.from_numpy(v) for k, v in params_to_state_dict(params).items()}
  path = tmp_path / "epoch_3.pt"
  torch.save({"epoch": 3, "name": "run", "state_dict": sd,
              "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}}, path)
  _, loaded = load_openclip(path, arch=TINY)
  _assert_params_identical(params, loaded)


class _RunsCode:
  def __reduce__(self):
    return (os.system, ("touch pwned-by-checkpoint",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = tmp_path / "evil.pt"
  torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode()}, path)
  with pytest.raises(CheckpointError, match="refusing to load .*could run code"):
    load_state_dict(path)
  assert not (tmp_path / "pwned-by-checkpoint").exists()
  path.write_bytes(pickle.dumps(_RunsCode()))
  with pytest.raises(CheckpointError, match="refusing"):
    load_state_dict(path)


def test_truncated_and_unknown_files(tiny, tmp_path):
  _, params = tiny
  for suffix in (".safetensors", ".pt"):
    path = tmp_path / f"w{suffix}"
    export_openclip(params, TINY, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
      load_state_dict(path)
  with pytest.raises(CheckpointError, match="does not exist"):
    load_state_dict(tmp_path / "nope.safetensors")
  (tmp_path / "w.ckpt").write_bytes(b"x")
  with pytest.raises(CheckpointError, match="unknown checkpoint type '.ckpt'"):
    load_state_dict(tmp_path / "w.ckpt")


def test_missing_extra_and_misshaped_tensors_are_named(tiny, tmp_path):
  _, params = tiny
  sd = params_to_state_dict(params)
  bad = dict(sd)
  del bad["visual.ln_post.weight"]
  bad["visual.extra_head"] = np.zeros(3, np.float32)
  save_state_dict(bad, tmp_path / "bad.safetensors")
  with pytest.raises(CheckpointError, match=r"(?s)missing tensors: visual\.ln_post\.weight.*"
                                            r"unexpected tensors: visual\.extra_head"):
    load_openclip(tmp_path / "bad.safetensors", arch=TINY)
  bad = dict(sd)
  bad["transformer.resblocks.1.mlp.c_fc.weight"] = np.zeros((255, 64), np.float32)
  save_state_dict(bad, tmp_path / "bad2.safetensors")
  with pytest.raises(CheckpointError, match=r"transformer\.resblocks\.1\.mlp\.c_fc\.weight: "
                                            r"expected \(256, 64\), got \(255, 64\)"):
    load_openclip(tmp_path / "bad2.safetensors", arch=TINY)
  with pytest.raises(CheckpointError, match="does not match architecture"):
    load_openclip(tmp_path / "bad2.safetensors", arch="ViT-B-32")


def _empty_state_dict(cfg):
  from clipjax.convert.openclip import param_shapes
  return {k: np.empty(v.shape, np.float32) for k, v in params_to_state_dict(
      jax.tree.map(lambda s: np.empty(s.shape, np.float32), param_shapes(cfg))).items()}


def test_architecture_inferred_from_shapes():
  for arch in ("ViT-B-32", "ViT-L-14-336", "RN50", "RN50x4", "ViT-S-16-tiny", "ViT-T-16-test",
               "RN-T-test"):
    assert infer_config(_empty_state_dict(get_model_config(arch))) == get_model_config(arch)


def test_inference_refuses_to_guess(monkeypatch):
  """Shapes that fit two architectures differing in head count, or none: an error listing
  the candidates, never a guess (the tiny text tower has 4 heads of 32, not 2 of 64)."""
  from clipjax.models import registry
  tiny = get_model_config("ViT-S-16-tiny")
  twin = tiny.replace(text={"heads": 2})
  monkeypatch.setitem(registry.MODEL_CONFIGS, "tiny-twin", twin)
  with pytest.raises(CheckpointError, match="several architectures.*ViT-S-16-tiny.*tiny-twin"):
    infer_config(_empty_state_dict(tiny))
  odd = tiny.replace(vision={"layers": 3})
  with pytest.raises(CheckpointError, match="match no registered architecture.*ViT-S-16-tiny"):
    infer_config(_empty_state_dict(odd))


def test_json_next_to_the_checkpoint_names_the_architecture(tmp_path):
  """Without --arch the `.json` export_openclip wrote (or open_clip's open_clip_config.json)
  decides: here a config no shape rule could tell (a different head count)."""
  cfg = get_model_config("ViT-S-16-tiny").replace(text={"heads": 2})
  _, params = create_model(cfg, seed=0)
  json_path = export_openclip(params, cfg, tmp_path / "odd.safetensors")
  assert json_path == tmp_path / "odd.json"
  model, loaded = load_openclip(tmp_path / "odd.safetensors")
  assert model.cfg == cfg
  _assert_params_identical(params, loaded)
  (tmp_path / "odd.json").unlink()  # without it, shapes pick the registered 4-head config
  assert load_openclip(tmp_path / "odd.safetensors")[0].cfg == get_model_config("ViT-S-16-tiny")


def test_failed_export_leaves_no_partial_file(tiny, tmp_path, monkeypatch):
  import safetensors.numpy
  _, params = tiny

  def write_half_then_fail(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
      f.write(b"partial")
    raise OSError("disk full")

  monkeypatch.setattr(safetensors.numpy, "save_file", write_half_then_fail)
  with pytest.raises(OSError, match="disk full"):
    export_openclip(params, TINY, tmp_path / "out.safetensors")
  assert list(tmp_path.iterdir()) == []


def test_convert_cli(tiny, tmp_path):
  _, params = tiny
  src = tmp_path / "epoch_1.pt"
  torch.save({"epoch": 1, "state_dict": {f"module.{k}": torch.from_numpy(v) for k, v in
                                         params_to_state_dict(params).items()}}, src)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for to, out in (("hf", tmp_path / "hf"), ("openclip", tmp_path / "out.safetensors")):
    subprocess.run([sys.executable, str(REPO / "scripts/convert.py"), f"--input={src}",
                    f"--arch={TINY}", f"--to={to}", f"--output={out}"], check=True, env=env,
                   capture_output=True, timeout=300)
  assert (tmp_path / "hf/config.json").exists() and (tmp_path / "hf/model.safetensors").exists()
  _, loaded = load_openclip(tmp_path / "out.safetensors", arch=TINY)
  _assert_params_identical(params, loaded)
  bad = subprocess.run([sys.executable, str(REPO / "scripts/convert.py"), f"--input={src}",
                        "--arch=ViT-Q-1", f"--output={tmp_path / 'x.safetensors'}"], env=env,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "unknown architecture 'ViT-Q-1'" in bad.stderr
  assert "Traceback" not in bad.stderr


# ViT-B-32-quickgelu (~95 s on 2 cores) runs with `-m slow`: the tiny model takes every step of
# the same path, and test_hf_export_loads_without_missing_keys_and_agrees imports a
# ViT-B-32-quickgelu folder back under its registry name.
@pytest.mark.parametrize("arch", [TINY, pytest.param("ViT-B-32-quickgelu", marks=pytest.mark.slow)])
def test_hf_clipmodel_folder_imports(tmp_path, arch):
  """A transformers CLIPModel folder -> clipjax params (and so open_clip files): bit-identical
  to what was exported, and a CLIPModel saved by transformers itself gives its embeddings."""
  from transformers import CLIPModel
  ref = make_openclip_model(arch)
  cfg = get_model_config(arch)
  from clipjax.convert.openclip import state_dict_to_params
  params = state_dict_to_params(torch_state_dict(ref), cfg)
  export_hf(params, arch, tmp_path / "hf")
  model, loaded = load_openclip(tmp_path / "hf")
  assert model.cfg == cfg  # the registry entry, so exports are named by it
  _assert_params_identical(params, loaded)
  hf = CLIPModel.from_pretrained(tmp_path / "hf").eval()
  with torch.no_grad():  # perturb, save with transformers, import what transformers wrote
    for p in hf.parameters():
      p.add_(torch.randn_like(p) * 0.01)
  hf.save_pretrained(tmp_path / "hf_saved")
  model, loaded = load_openclip(f"local-dir:{tmp_path / 'hf_saved'}")
  size = cfg.vision.image_size
  images = np.random.default_rng(1).normal(size=(2, size, size, 3)).astype(np.float32)
  ids = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat", "two dogs in the snow"])
  with torch.no_grad():
    hf_img = hf.get_image_features(
        pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2))).pooler_output.numpy()
    hf_txt = hf.get_text_features(input_ids=ids).pooler_output.numpy()
  img = model.apply({"params": loaded}, images, method=model.encode_image)
  txt = model.apply({"params": loaded}, jnp.asarray(ids.numpy(), jnp.int32),
                    method=model.encode_text)
  assert rel_err(img, hf_img) < TOL and rel_err(txt, hf_txt) < TOL
  out = subprocess.run([sys.executable, str(REPO / "scripts/convert.py"),
                        f"--input={tmp_path / 'hf_saved'}", "--to=openclip",
                        f"--output={tmp_path / 'back.safetensors'}"],
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  run = subprocess.run([sys.executable, "-c", out.stdout.split("load in PyTorch:\n")[1].strip()],
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
