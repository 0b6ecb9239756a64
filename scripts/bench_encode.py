r"""Encoder throughput: clipjax vs open_clip (PyTorch) on the same inputs, same machine, one run.

  python scripts/bench_encode.py                      # ViT-B-32, batch 16, float32, CPU
  python scripts/bench_encode.py --arch=ViT-B-16 --batch=32
  python scripts/bench_encode.py --arch=ViT-B-16-SigLIP2  # timm trunk + bidirectional text
  python scripts/bench_encode.py --arch=ViT-B-16-SigLIP2-NaFlex  # vs transformers' Siglip2Model

NaFlex architectures are compared with transformers' `Siglip2Model` (open_clip 3.x has no
NaFlex tower) on `Siglip2ImageProcessor`'s arrays for photos of mixed aspect ratios at
`--max_num_patches` (256), and the number of programs clipjax compiled is printed.

Prints images/s and texts/s of both with the ratio, and clipjax's achieved GFLOP/s (FLOPs
counted from the model's shapes) next to a large jitted float32 `jnp.dot` in the same run.
Random weights (identical in both frameworks), random images and the vendored COCO sample's
captions (scripts/bench_inputs.py; their token lengths are printed); timings are medians. Texts are timed twice for clipjax: at the full context (the same
work as open_clip) and with `trim_padding` (columns after the batch's last end-of-text token
dropped, exact under the causal mask), which is what clipjax's evaluation uses. SigLIP models
read the padding (no trimming) and use an HF tokenizer that is not available offline, so their
texts are random ids of the COCO captions' BPE lengths, padded with 0 to the context.
"""
import os
import statistics
import time

from absl import flags

from clipjax import cli

flags.DEFINE_string("arch", "ViT-B-32", "Architecture.")
flags.DEFINE_integer("batch", 16, "Batch size.")
flags.DEFINE_integer("repeats", 20, "Timed repetitions (after warm-up).")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square matmul used as the FLOP/s reference.")
flags.DEFINE_integer("max_num_patches", 256, "NaFlex architectures: patches per image.")
FLAGS = flags.FLAGS


def _median_seconds(fn, repeats):
  fn()  # warm-up / compile
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np
  import open_clip
  import torch

  from bench_inputs import coco_captions, openclip_model, token_lengths

  from clipjax.convert.openclip import state_dict_to_params
  from clipjax.models import CLIP, get_model_config
  from clipjax.models.text import trim_padding
  from clipjax.text.tokenizer import Tokenizer

  cfg = get_model_config(FLAGS.arch)
  torch.manual_seed(0)
  n, size = FLAGS.batch, cfg.vision.image_size
  if cfg.vision.naflex:
    ref, params, images, x_torch = _naflex_reference(cfg, n)
    reference = "transformers"
  else:
    ref = openclip_model(FLAGS.arch).eval()
    params = state_dict_to_params({k: v.numpy() for k, v in ref.state_dict().items()}, cfg)
    images = np.random.default_rng(0).normal(size=(n, size, size, 3)).astype(np.float32)
    x_torch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    reference = "open_clip"
  model = CLIP(cfg)
  captions = coco_captions(n)
  if cfg.text.tokenizer_dir or cfg.vision.naflex:  # SigLIP: random ids of the captions' lengths
    ids = np.zeros((n, cfg.text.context_length), np.int64)
    lengths = (np.asarray(Tokenizer()(captions)) != 0).sum(-1)  # their CLIP BPE lengths
    rng = np.random.default_rng(1)
    for row, length in zip(ids, np.minimum(lengths, cfg.text.context_length)):
      row[:length] = rng.integers(1, cfg.text.vocab_size, length)
    ids = torch.from_numpy(ids)
  else:
    ids = open_clip.get_tokenizer(FLAGS.arch)(captions, context_length=cfg.text.context_length)

  enc_img = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))
  enc_txt = jax.jit(lambda p, t: model.apply({"params": p}, t, method=model.encode_text))
  x_jax, t_jax = jax.tree.map(jnp.asarray, images), jnp.asarray(ids.numpy(), jnp.int32)
  ours_img = _median_seconds(lambda: enc_img(params, x_jax).block_until_ready(), FLAGS.repeats)
  ours_txt = _median_seconds(lambda: enc_txt(params, t_jax).block_until_ready(), FLAGS.repeats)
  trimmable = cfg.text.trimmable
  if trimmable:
    t_trim = jnp.asarray(trim_padding(ids.numpy()), jnp.int32)
    ours_trim = _median_seconds(lambda: enc_txt(params, t_trim).block_until_ready(),
                                FLAGS.repeats)

  with torch.inference_mode():
    if cfg.vision.naflex:
      ref_img = _median_seconds(lambda: ref.get_image_features(**x_torch), FLAGS.repeats)
      ref_txt = _median_seconds(lambda: ref.get_text_features(input_ids=ids), FLAGS.repeats)
    else:
      ref_img = _median_seconds(lambda: ref.encode_image(x_torch), FLAGS.repeats)
      ref_txt = _median_seconds(lambda: ref.encode_text(ids), FLAGS.repeats)

  m = FLAGS.matmul_size
  a = jax.random.normal(jax.random.key(0), (m, m), jnp.float32)
  dot = jax.jit(jnp.dot)
  mm = _median_seconds(lambda: dot(a, a).block_until_ready(), max(5, FLAGS.repeats // 2))
  mm_gflops = 2 * m ** 3 / mm / 1e9
  from clipjax.train.flops import tower_forward_flops  # XLA's count where no formula
  img_flops = tower_forward_flops(model, "image",
                                  FLAGS.max_num_patches if cfg.vision.naflex else 0)
  txt_flops = tower_forward_flops(model, "text", cfg.text.context_length)
  ours_gflops = n * (img_flops + txt_flops) / (ours_img + ours_txt) / 1e9

  naflex = (f", NaFlex {FLAGS.max_num_patches} patches per image, {enc_img._cache_size()} "
            f"compiled image program(s)" if cfg.vision.naflex else "")
  print(f"{FLAGS.arch}, batch {n}, float32, {jax.devices()[0].platform}, "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores{naflex}")
  print(f"texts: the COCO sample's captions, tokens {token_lengths(ids.numpy())}")
  print(f"{'':14s} {'clipjax':>10s} {reference:>12s} {'ratio':>7s}")
  print(f"{'images/s':14s} {n / ours_img:10.1f} {n / ref_img:12.1f} {ref_img / ours_img:6.2f}x")
  print(f"{'texts/s':14s} {n / ours_txt:10.1f} {n / ref_txt:12.1f} {ref_txt / ours_txt:6.2f}x")
  if trimmable:
    print(f"{'texts/s trim':14s} {n / ours_trim:10.1f} {n / ref_txt:12.1f} "
          f"{ref_txt / ours_trim:6.2f}x  (clipjax at length {t_trim.shape[1]} of {ids.shape[1]})")
  print(f"clipjax encoders: {ours_gflops:.1f} GFLOP/s; jitted {m}x{m} float32 jnp.dot: "
        f"{mm_gflops:.1f} GFLOP/s; ratio {ours_gflops / mm_gflops:.0%}")


def _naflex_reference(cfg, n):
  """transformers' Siglip2Model with random weights, the same weights as clipjax params, and
  Siglip2ImageProcessor's arrays for n random photos of mixed aspect ratios (numpy, torch)."""
  import numpy as np
  import transformers
  from PIL import Image

  from clipjax.convert.hf_siglip import hf_siglip_config
  from clipjax.convert.hf_siglip_load import hf_siglip_to_state_dict
  from clipjax.convert.openclip import state_dict_to_params
  ref = transformers.Siglip2Model(hf_siglip_config(cfg)).eval()
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  params = state_dict_to_params(hf_siglip_to_state_dict(sd, cfg), cfg)
  rng = np.random.default_rng(0)
  shapes = [(480, 640), (640, 480), (500, 500), (300, 900), (1000, 250)]
  photos = [Image.fromarray(rng.integers(0, 256, (*shapes[i % len(shapes)], 3), np.uint8))
            for i in range(n)]
  inputs = transformers.Siglip2ImageProcessor(
      patch_size=cfg.vision.patch_size, max_num_patches=FLAGS.max_num_patches)(
          images=photos, return_tensors="pt")
  return ref, params, {k: v.numpy() for k, v in inputs.items()}, dict(inputs)


if __name__ == "__main__":
  cli.run(main)
