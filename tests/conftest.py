"""Shared test setup. Environment first: XLA_FLAGS must be set before jax is imported."""
import atexit
import os
import shutil
import tempfile

# The suite compiles hundreds of small programs, and compiling them takes longer than running
# them. LLVM optimisation level 0 (~40% less compile time for the same HLO programs) and XLA:CPU's
# elemental emitters instead of its fusion emitters (measured on the 2-core machine: the tiny
# CLIP train step 5.7 -> 4.1 s, DRAFT's 4.3 -> 2.1 s; steps ~1.5x slower, so a test running
# few steps per compile gains: the method learning tests 240 -> 196 s) change only how the
# machine code is generated.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a subprocess test: `devices` simulated CPU devices, fast compiles."""
  return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"  # no model hub here: any download attempt must fail fast
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# One persistent XLA compilation cache for the session, inherited by the subprocess tests: the
# tiny test models' train steps are compiled once, not once per test and process. It is a
# fresh directory per session, so nothing compiled by another checkout is ever reused.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="clipjax-test-xla-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import functools  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# 29 real COCO photos with five captions each, vendored with their licences.
COCO_SAMPLE = REPO / "third_party/coco_sample"


# Test modules in falling order of their cost on the 2-core CI machine. pytest-xdist
# (--dist loadscope --no-loadscope-reorder) hands modules out in collection order, so starting
# the long ones first keeps one worker from finishing alone with a slow module
# (longest-processing-time-first). Order only: no effect on any result.
SLOWEST_FIRST = ("study/test_study.py", "test_documented_commands.py", "methods/test_methods.py",
                 "convert/test_convert.py",
                 "train/test_user_paths.py", "train/test_user_data.py",
                 "train/test_naflex_training.py", "train/test_ring_training.py",
                 "train/test_step.py",
                 "models/test_openclip_parity.py", "models/test_scan_layers.py",
                 "train/test_multihost.py", "train/test_main.py", "parallel/test_plan_scale.py",
                 "methods/test_lora_methods.py", "methods/test_distill.py", "models/test_lora.py",
                 "train/test_trainer_parity.py", "train/test_ema.py",
                 "losses/test_losses.py", "losses/test_ring.py", "methods/test_siglip_base.py",
                 "evaluate/test_runner.py",
                 "train/test_bench_device.py", "models/test_siglip.py", "models/test_resnet.py",
                 "data/test_pipeline.py", "models/test_hf_text.py", "models/test_naflex.py")


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  module = lambda item: item.nodeid.split("::")[0].removeprefix("tests/")
  items.sort(key=lambda item: rank.get(module(item), len(rank)))  # stable: rest in order


def cli_env(**extra: str) -> dict[str, str]:
  """The environment of a command-line test: CPU, one device, fast compiles, no hub."""
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1",
              XLA_FLAGS=xla_flags(1), **extra)


@pytest.fixture(scope="session")
def forked_cli():
  """`forked_cli.run(["-m", MODULE, *args] or [SCRIPT, *args], cwd)`: a command line that stops
  before any work (a user error, --help), forked from one warm interpreter per test worker
  instead of a fresh Python start (tests/forked_cli.py); in `cli_env()`."""
  from forked_cli import ForkedCli
  runner = ForkedCli(cli_env())
  yield runner
  runner.close()


@pytest.fixture(scope="session")
def coco_sample() -> Path:
  assert len(list((COCO_SAMPLE / "images").glob("*.jpg"))) == 29, COCO_SAMPLE
  return COCO_SAMPLE


def assert_user_error(out, *needles) -> None:
  """A CLI's user error: exit status 2, one `error:` line holding every needle, no traceback."""
  assert out.returncode == 2, out.stderr[-2000:]
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if "error:" in l]
  assert len(lines) == 1, out.stderr[-2000:]
  for needle in needles:
    assert needle in lines[0], lines[0]


@functools.lru_cache(maxsize=None)
def _register_openclip_config(arch: str) -> None:
  """Makes clipjax-only test architectures known to open_clip by their JSON config."""
  import open_clip

  from clipjax.models.registry import CLIPJAX_ONLY, get_model_config
  if arch in CLIPJAX_ONLY:
    path = Path(tempfile.mkdtemp()) / f"{arch}.json"
    path.write_text(json.dumps(get_model_config(arch).to_openclip_json()))
    open_clip.add_model_config(path)


def make_openclip_model(arch, seed: int = 0):
  """An open_clip model with random weights, every parameter (LayerNorms, biases, logit
  scale included) and BatchNorm statistic perturbed so that no tensor keeps a trivial init
  value.

  arch: an open_clip name, or a clipjax CLIPConfig built through open_clip's own CLIP class
  from its open_clip JSON.
  """
  import open_clip
  import torch
  torch.manual_seed(seed)
  from clipjax.models.configs import TimmViTConfig
  from clipjax.models.registry import CLIPJAX_ONLY, get_model_config
  cfg = get_model_config(arch)
  if isinstance(cfg.vision, TimmViTConfig) and (cfg.vision.timm_model_name in _NOT_IN_TIMM
                                                or arch in CLIPJAX_ONLY):
    model = _tiny_siglip(cfg)
  elif isinstance(cfg.vision, TimmViTConfig) and not isinstance(arch, str):
    model = _timm_tower_model(cfg)
  elif isinstance(arch, str):
    _register_openclip_config(arch)
    model = open_clip.create_model(arch, pretrained=None)
  else:
    model = open_clip.model.CLIP(**arch.to_openclip_json())
  model.eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.02)
    for name, b in model.named_buffers():  # ResNet BatchNorm statistics (used in eval mode)
      if name.endswith("running_mean"):
        b.copy_(torch.randn_like(b) * 0.1)
      elif name.endswith("running_var"):
        b.copy_(torch.rand_like(b) + 0.5)
  return model


_NOT_IN_TIMM = ("vit_tiny_test_patch16_siglip_32", "naflexvit_tiny_test_patch16_siglip")


def _timm_tower_model(cfg):
  """open_clip's CustomTextCLIP (or CLIP) from `cfg`'s open_clip JSON, its timm trunk built by
  open_clip's own TimmModel at `cfg.vision.layers` blocks (timm's other sizes unchanged): the
  depth-reduced twin of a zoo architecture, without building the full trunk."""
  import functools
  from unittest import mock

  import open_clip
  import timm
  spec = cfg.to_openclip_json()
  cls = open_clip.model.CustomTextCLIP if spec.pop("custom_text", False) else open_clip.model.CLIP
  with mock.patch.object(timm, "create_model", functools.partial(timm.create_model,
                                                                 depth=cfg.vision.layers)):
    return cls(**spec)


def _tiny_siglip(cfg):
  """open_clip's CustomTextCLIP for a small SigLIP config that timm has no name for: built
  from a real SigLIP JSON, its trunk replaced by timm's VisionTransformer at the small sizes."""
  import open_clip
  import timm
  v = cfg.vision
  spec = cfg.to_openclip_json()
  spec.pop("custom_text")
  spec["vision_cfg"] = dict(spec["vision_cfg"], timm_model_name="vit_base_patch16_siglip_224",
                            image_size=224)
  model = open_clip.model.CustomTextCLIP(**spec)
  model.visual.trunk = timm.create_model(
      "vit_base_patch16_siglip_224", img_size=v.image_size, patch_size=v.patch_size,
      embed_dim=v.width, depth=v.layers, num_heads=v.heads, mlp_ratio=v.mlp_ratio,
      num_classes=0, global_pool="map", act_layer="gelu_tanh" if v.gelu_tanh else "gelu")
  return model


def torch_state_dict(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# Two float32 computations of one network that group their sums differently (a merged weight vs
# its adapter added after, a batch of 2 streams vs 1, another CPU's matmul kernel) differ by
# rounding: a few ulps of the output's scale per layer, not of each element, so elements near
# zero may differ by 1e-6 relative to themselves. Compare with rel_err (error over the tensor's
# largest magnitude) against this: 64 float32 ulps (7.6e-6), ~8x what the 2-layer test towers
# show (<= 4e-7 x scale observed) and far below what a wrong layer moves (>= 1e-2).
FLOAT32_ROUNDING = 64 * float(np.finfo(np.float32).eps)


def rel_err(ours, ref) -> float:
  """max |ours - ref| / max |ref|: the error relative to the tensor's scale (the absolute
  error when ref is all zeros; inf when anything is non-finite, so a NaN never passes)."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  if ours.shape != ref.shape or not (np.isfinite(ours).all() and np.isfinite(ref).all()):
    return float("inf")
  err = float(np.abs(ours - ref).max(initial=0.0))
  scale = float(np.abs(ref).max(initial=0.0))
  return err / scale if scale > 0 else err


def write_hf_text_dir(path, model_type: str, corpus: list[str]):
  """A tiny random HF text model directory (config.json + a tokenizer trained on `corpus`):
  model_type roberta / xlm-roberta (byte-level BPE), t5 / mt5 (unigram) or m2m_100 (NLLB's
  SentencePiece BPE with its language codes). No hub."""
  import transformers
  from tokenizers import (
    ByteLevelBPETokenizer,
    SentencePieceBPETokenizer,
    SentencePieceUnigramTokenizer,
  )
  if model_type == "m2m_100":
    bpe = SentencePieceBPETokenizer()
    bpe.train_from_iterator(corpus * 5, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    model = json.loads(bpe._tokenizer.to_str())["model"]
    tok = transformers.NllbTokenizer(vocab=model["vocab"],
                                     merges=[tuple(m) for m in model["merges"]])
    config = transformers.M2M100Config(
        vocab_size=len(tok), d_model=64, encoder_layers=2, decoder_layers=1,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=96,
        decoder_ffn_dim=96, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
  elif model_type in ("roberta", "xlm-roberta"):
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus * 5, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok = transformers.RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    config = (transformers.XLMRobertaConfig if model_type == "xlm-roberta"
              else transformers.RobertaConfig)(
        vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=96, max_position_embeddings=80, pad_token_id=tok.pad_token_id,
        type_vocab_size=1, layer_norm_eps=1e-5)
  else:
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(corpus * 5, vocab_size=200, unk_token="<unk>",
                           special_tokens=["<pad>", "</s>", "<unk>"])
    tok = transformers.T5TokenizerFast(tokenizer_object=sp._tokenizer, pad_token="<pad>",
                                       eos_token="</s>", unk_token="<unk>", extra_ids=0)
    config = (transformers.MT5Config if model_type == "mt5" else transformers.T5Config)(
        vocab_size=len(tok), d_model=64, d_kv=16, d_ff=96, num_layers=2, num_heads=4,
        relative_attention_max_distance=20, pad_token_id=tok.pad_token_id,
        feed_forward_proj="gated-gelu" if model_type == "mt5" else "relu")
  tok.save_pretrained(path)
  config.save_pretrained(path)
  return path


SIGLIP_CORPUS = ["a photo of a cat", "two dogs play in the snow at night",
                 "a red car parked outside", "naïve café in tokyo",
                 "the quick brown fox jumps over the lazy dog"]


def write_siglip_tokenizer(path, kind: str) -> str:
  """A small SigLIP-kind tokenizer trained locally and saved with save_pretrained (no hub):
  kind t5 (SigLIP's SentencePiece), gemma (SigLIP 2) or xlmr (the i18n models)."""
  import transformers
  from tokenizers import SentencePieceBPETokenizer, SentencePieceUnigramTokenizer
  if kind == "gemma":
    bpe = SentencePieceBPETokenizer()
    bpe.train_from_iterator(SIGLIP_CORPUS * 5, vocab_size=300, min_frequency=1,
                            special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"])
    tok = transformers.GemmaTokenizerFast(tokenizer_object=bpe._tokenizer, pad_token="<pad>",
                                          eos_token="<eos>", bos_token="<bos>",
                                          unk_token="<unk>")
  else:
    sp = SentencePieceUnigramTokenizer()
    specials = ["<pad>", "</s>", "<unk>"] if kind == "t5" else ["<s>", "<pad>", "</s>", "<unk>"]
    sp.train_from_iterator(SIGLIP_CORPUS * 5, vocab_size=200, unk_token="<unk>",
                           special_tokens=specials)
    if kind == "t5":
      tok = transformers.T5TokenizerFast(tokenizer_object=sp._tokenizer, pad_token="<pad>",
                                         eos_token="</s>", unk_token="<unk>", extra_ids=0)
    else:
      tok = transformers.XLMRobertaTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>",
                                                 eos_token="</s>", pad_token="<pad>",
                                                 unk_token="<unk>")
  tok.save_pretrained(path)
  return str(path)


def tiny_siglip2_hf_config():
  """transformers' Siglip2Config (NaFlex) of ViT-T-16-SigLIP2-NaFlex-test's sizes."""
  import transformers
  return transformers.Siglip2Config(
      text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=256,
                       num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                       projection_size=64, pad_token_id=None, bos_token_id=None,
                       eos_token_id=None),
      vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, patch_size=16, num_patches=16))
