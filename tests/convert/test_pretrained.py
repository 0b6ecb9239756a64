"""Weights by name, offline: open_clip's tag table, `hf-hub:` / `local-dir:` names and tags
resolved through a Hugging Face cache built here in huggingface_hub's own layout. The layout
is proven real by open_clip loading the same cache under HF_HUB_OFFLINE=1."""
import json
import os
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import open_clip
import pytest
import torch
from conftest import REPO, make_openclip_model, rel_err
from PIL import Image

import clipjax
from clipjax.convert import pretrained
from clipjax.convert.io import CheckpointError
from clipjax.models import get_model_config
from clipjax.models.registry import MODEL_CONFIGS

TINY = "ViT-S-16-tiny"


def test_tag_table_equals_openclip_for_every_supported_architecture():
  ours = pretrained.list_pretrained()
  ref = [(a, t) for a, t in open_clip.list_pretrained() if a in MODEL_CONFIGS]
  assert ours == ref and len(ours) > 80
  for arch, tag in ours:
    want = open_clip.get_pretrained_cfg(arch, tag)
    got = pretrained.pretrained_cfg(arch, tag)
    assert got["hf_hub"] == want["hf_hub"], (arch, tag)
    for key in ("quick_gelu", "interpolation", "resize_mode"):
      assert got.get(key) == want.get(key), (arch, tag, key)
    for key in ("mean", "std"):
      assert tuple(got[key]) == tuple(want[key]), (arch, tag, key)


def _cache_file(cache: str, repo: str, filename: str, data: bytes) -> str:
  """One file in huggingface_hub's cache layout: models--ORG--NAME/{refs/main, snapshots/REV}."""
  root = os.path.join(cache, "models--" + repo.replace("/", "--"))
  revision = "0123456789abcdef0123456789abcdef01234567"
  os.makedirs(os.path.join(root, "refs"), exist_ok=True)
  with open(os.path.join(root, "refs", "main"), "w") as f:
    f.write(revision)
  path = os.path.join(root, "snapshots", revision, filename)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)
  return path


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
  """A cache holding `test-org/tiny-clip` (open_clip's hub layout: open_clip_config.json with
  model_cfg + preprocess_cfg, open_clip_model.safetensors) with open_clip's random weights."""
  from safetensors.torch import save_file
  cache = str(tmp_path_factory.mktemp("hf") / "hub")
  ref = make_openclip_model(TINY)
  weights = tmp_path_factory.mktemp("w") / "w.safetensors"
  save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(weights))
  config = {"model_cfg": get_model_config(TINY).to_openclip_json(),
            "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                               "interpolation": "bilinear", "resize_mode": "squash"}}
  _cache_file(cache, "test-org/tiny-clip", "open_clip_config.json", json.dumps(config).encode())
  _cache_file(cache, "test-org/tiny-clip", "open_clip_model.safetensors", weights.read_bytes())
  return cache, ref


def test_hf_hub_name_loads_as_open_clip_loads_it(hub_cache, coco_sample):
  cache, ref = hub_cache
  model, params, _, preprocess = clipjax.create_model_and_transforms(
      "hf-hub:test-org/tiny-clip", cache_dir=cache)
  oc_model, _, oc_preprocess = open_clip.create_model_and_transforms(
      "hf-hub:test-org/tiny-clip", cache_dir=cache)  # offline: HF_HUB_OFFLINE=1 (conftest)
  oc_model.eval()
  photo = Image.open(sorted((coco_sample / "images").glob("*.jpg"))[0])
  ours_px, ref_px = preprocess(photo), oc_preprocess(photo)
  np.testing.assert_array_equal(ours_px, ref_px.numpy().transpose(1, 2, 0))
  ids = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat", "two dogs"])
  with torch.no_grad():
    ref_img = oc_model.encode_image(ref_px[None]).numpy()
    ref_txt = oc_model.encode_text(ids).numpy()
  img = model.apply({"params": params}, jnp.asarray(ours_px[None]), method=model.encode_image)
  txt = model.apply({"params": params}, jnp.asarray(ids.numpy()), method=model.encode_text)
  assert rel_err(img, ref_img) < 1e-5 and rel_err(txt, ref_txt) < 1e-5
  assert float(params["logit_scale"]) == pytest.approx(float(oc_model.logit_scale))


def test_tag_resolves_to_the_cache_open_clip_reads(tmp_path):
  cache = str(tmp_path / "hub")
  arch, tag = "ViT-B-32", "laion2b_s34b_b79k"
  repo = open_clip.get_pretrained_cfg(arch, tag)["hf_hub"].rstrip("/")
  path = _cache_file(cache, repo, "open_clip_model.safetensors", b"weights")
  resolved = pretrained.resolve(arch, tag, cache_dir=cache)
  assert str(resolved.path) == path and resolved.arch == arch
  assert resolved.preprocess["interpolation"] == "bicubic"
  assert open_clip.download_pretrained(open_clip.get_pretrained_cfg(arch, tag),
                                       cache_dir=cache) == path
  # OpenAI weights were trained with QuickGELU: their tag picks the -quickgelu architecture.
  repo = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].rstrip("/")
  _cache_file(cache, repo, "open_clip_model.safetensors", b"weights")
  assert pretrained.resolve("ViT-B-32", "openai", cache_dir=cache).arch == "ViT-B-32-quickgelu"


def test_missing_names_fail_fast_and_say_why(tmp_path):
  cache = str(tmp_path / "empty")
  start = time.perf_counter()
  with pytest.raises(CheckpointError, match="^ViT-B-16 pretrained=laion2b_s34b_b88k: .* is not "
                                            "in the Hugging Face cache.*HF_HUB_OFFLINE"):
    pretrained.resolve("ViT-B-16", "laion2b_s34b_b88k", cache_dir=cache)  # the tag, then why
  with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
    clipjax.load_openclip("hf-hub:nobody/nothing", cache_dir=cache)
  assert time.perf_counter() - start < 10  # never waits on the network
  with pytest.raises(CheckpointError, match=r"webli: timm/ViT-B-16-SigLIP is not in the Hugging Face "
                     r"cache \(" + str(tmp_path)):  # a SigLIP tag resolves to its hub repo
    pretrained.resolve("ViT-B-16-SigLIP", "webli", cache_dir=cache)
  with pytest.raises(CheckpointError, match=r"timm/eva02_base_patch16_clip_224.merged2b_s8b_b131k "
                     r"is not in the Hugging Face cache"):  # an EVA tag: its hub repo
    pretrained.resolve("EVA02-B-16", "merged2b_s8b_b131k", cache_dir=cache)
  with pytest.raises(CheckpointError, match="convnext_base is an open_clip ConvNeXt model; "
                                            "clipjax has no ConvNeXt towers yet"):
    pretrained.resolve("convnext_base", "laion400m_s13b_b51k")
  with pytest.raises(CheckpointError, match="did you mean 'laion2b_s34b_b79k'"):
    pretrained.resolve("ViT-B-32", "laion2b_s34b_b80k")
  with pytest.raises(CheckpointError, match="give pretrained=TAG"):
    pretrained.resolve("ViT-B-32")
  with pytest.raises(CheckpointError, match="is not a directory"):
    pretrained.resolve(f"local-dir:{tmp_path}/nope")


def test_local_dir_and_cli_names(hub_cache, tmp_path):
  """`local-dir:` reads the same layout from a folder; the CLIs take hf-hub: names and honour
  HF_HOME (the cache is HF_HOME/hub)."""
  cache, _ = hub_cache
  snapshot = next(os.scandir(os.path.join(cache, "models--test-org--tiny-clip", "snapshots")))
  _, a = clipjax.load_openclip(f"local-dir:{snapshot.path}")
  _, b = clipjax.load_openclip("hf-hub:test-org/tiny-clip", cache_dir=cache)
  assert all(np.array_equal(x, y) for x, y in zip(jax_leaves(a), jax_leaves(b)))
  env = dict(os.environ, HF_HOME=os.path.dirname(cache), HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(REPO))
  env.pop("HF_HUB_CACHE", None)
  out = subprocess.run([sys.executable, str(REPO / "scripts/convert.py"),
                        "--input=hf-hub:test-org/tiny-clip", "--to=openclip",
                        f"--output={tmp_path / 'tiny.safetensors'}"],
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  line = out.stdout.split("load in PyTorch:\n", 1)[1].strip()
  run = subprocess.run([sys.executable, "-c", line], env=env, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  bad = subprocess.run([sys.executable, str(REPO / "scripts/quickstart.py"),
                        "--checkpoint=hf-hub:test-org/missing"], env=env, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 2 and "not in the Hugging Face cache" in bad.stderr
  assert "Traceback" not in bad.stderr


def jax_leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
