r"""One device check, one process: how fast clipjax is on this machine's accelerator.

  python scripts/bench_device.py                   # a GPU or TPU VM (<= 8 minutes on one GPU)
  python scripts/bench_device.py --small           # the same code paths on a CPU, tiny sizes

Writes `--out` (JSON) and `--md` (a markdown table) with:
  (a) encode throughput of ViT-B-16 and ViT-L-14 in the accelerator dtype (model.dtype=auto:
      bfloat16 on TPUs / GPUs, float32 on CPUs): clipjax vs open_clip on the same device
      (torch autocast + SDPA) when a torch build for it is installed, else clipjax alone;
  (b) the CLIP ViT-B-16 train step: samples/s and MFU at the largest power-of-two global batch
      that fits (up to --max_batch);
  (c) the tiled DRAFT loss (forward + backward, RFF MMD) at global batch --loss_batch
      (1,048,576): step time and peak device memory;
  (d) the exchanges: for the CLIP and DRAFT losses under `all_gather` and `ring`, the largest
      power-of-two global batch that runs (doubling from --loss_batch up to
      --ring_max_batch), its step time and peak memory;
  (e) the device, the versions and the kernels chosen (compute dtype, attention).
docs/benchmarks.md says how to run it on a GPU VM and a TPU VM.
"""
import json
import statistics
import time

from absl import flags

from clipjax import cli

flags.DEFINE_bool("small", False, "Tiny models and batches (CPU, the test suite).")
flags.DEFINE_string("out", "bench_device.json", "JSON results.")
flags.DEFINE_string("md", "bench_device.md", "Markdown table.")
flags.DEFINE_integer("max_batch", 4096, "Largest train-step batch tried in (b).")
flags.DEFINE_integer("loss_batch", 1 << 20, "Global batch of the tiled DRAFT loss in (c), and "
                     "where (d) starts doubling.")
flags.DEFINE_integer("ring_max_batch", 1 << 24, "Largest global batch tried in (d).")
FLAGS = flags.FLAGS


def _median(fn, repeats: int) -> float:
  fn()
  fn()  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _torch_device(jax_backend: str):
  """The torch device matching JAX's backend, or None (no torch build for it)."""
  try:
    import torch
  except ImportError:
    return None
  if jax_backend == "cpu":
    return torch.device("cpu")
  if jax_backend in ("gpu", "cuda") and torch.cuda.is_available():
    return torch.device("cuda")
  return None  # TPU: torch_xla is not what open_clip users run


def encode(arch: str, batch: int, repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from clipjax.models import create_model
  from clipjax.models.layers import compute_dtype
  dtype = compute_dtype("auto")
  model, params = create_model(arch, dtype=dtype)
  size, length = model.cfg.vision.image_size, model.cfg.text.context_length
  rng = np.random.default_rng(0)
  images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
  ids = rng.integers(1, 49000, size=(batch, length)).astype(np.int32)
  enc_img = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))
  enc_txt = jax.jit(lambda p, t: model.apply({"params": p}, t, method=model.encode_text))
  x, t = jnp.asarray(images), jnp.asarray(ids)
  out = {"arch": arch, "batch": batch, "dtype": jnp.dtype(dtype).name,
         "clipjax_images_per_s": batch / _median(
             lambda: enc_img(params, x).block_until_ready(), repeats),
         "clipjax_texts_per_s": batch / _median(
             lambda: enc_txt(params, t).block_until_ready(), repeats)}
  device = _torch_device(jax.default_backend())
  if device is None:
    out["open_clip"] = "no torch build for this device: clipjax alone"
    return out
  import open_clip
  import torch
  # open_clip's CLIP from the same model JSON (clipjax's test architectures included)
  ref = open_clip.model.CLIP(**model.cfg.to_openclip_json()).to(device).eval()
  half = dtype == jnp.bfloat16
  xt = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device)
  tt = torch.from_numpy(ids.astype(np.int64)).to(device)

  def run(fn):
    def call():
      with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=half):
        fn()
      if device.type == "cuda":
        torch.cuda.synchronize()
    return call

  out["open_clip_images_per_s"] = batch / _median(run(lambda: ref.encode_image(xt)), repeats)
  out["open_clip_texts_per_s"] = batch / _median(run(lambda: ref.encode_text(tt)), repeats)
  out["open_clip"] = f"torch {torch.__version__} on {device.type}" + (
      ", autocast bfloat16, SDPA" if half else ", float32")
  return out


def _is_oom(error: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


def train_step(arch: str, max_batch: int, steps: int, min_batch: int = 1) -> dict:
  """CLIP train-step samples/s and MFU at the largest power-of-two batch that fits, doubling
  from max(min_batch, device count) up to max_batch."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from clipjax.methods import get_method, method_config, run_options
  from clipjax.models import create_model
  from clipjax.models.layers import compute_dtype
  from clipjax.parallel.mesh import host_batch_to_global, make_mesh
  from clipjax.train import flops
  from clipjax.train.optim import make_optimizer
  from clipjax.options import OptimOptions
  from clipjax.train.step import make_train_step
  model, clip = create_model(arch, dtype=compute_dtype("auto"))
  mesh, method = make_mesh(), get_method("clip")
  params = {"clip": clip}
  optim = OptimOptions(lr=1e-4, warmup_steps=0, grad_clip_norm=0.0)
  tx, frozen = make_optimizer(params, optim, 100)
  objective = method.objective(model, mesh, run_options(method_config("clip")))
  step = make_train_step(objective, tx, frozen, mesh, clamp_scale=True)
  size, length = model.cfg.vision.image_size, model.cfg.text.context_length
  peak, source = flops.peak_flops()
  best, batch = None, max(min_batch, mesh.size)
  while batch <= max_batch:
    host = {"image": np.zeros((batch, size, size, 3), np.uint8),
            "caption": np.ones((batch, length), np.int32), "image_id": np.arange(batch)}
    state = {"params": jax.tree.map(jnp.array, params), "opt_state": tx.init(params),
             "step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(jax.random.key(0))}
    global_batch = host_batch_to_global(host, mesh)
    try:
      def one():
        nonlocal state
        state, metrics = step(state, global_batch)
        metrics["loss"].block_until_ready()
      seconds = _median(one, steps)
    except Exception as e:  # noqa: BLE001 — only out-of-memory ends the search
      if not _is_oom(e):
        raise
      break
    step_flops = flops.step_flops(model, host, method.text_towers(),
                                  flops.trainable_towers(frozen))
    best = {"arch": arch, "batch": batch, "samples_per_s": batch / seconds,
            "model_tflops": step_flops / seconds / 1e12,
            "mfu": step_flops / seconds / (peak * mesh.size), "peak": source}
    batch *= 2
  if best is None:
    raise RuntimeError(f"{arch}: not even a batch of {mesh.size} fits on this device")
  return best


def tiled_loss(batch: int, dim: int, block: int, steps: int, name: str = "draft",
               exchange: str = "all_gather") -> dict:
  """The tiled `name` ("draft" | "clip") loss step (value and gradients of its embedding sets)
  at `batch` with `exchange`."""
  import jax
  import jax.numpy as jnp

  from clipjax import losses
  from clipjax.models.clip import l2_normalize
  from clipjax.parallel.mesh import make_mesh, on_mesh
  mesh = make_mesh()
  keys = jax.random.split(jax.random.key(0), 3)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))

  def unit(key):
    return l2_normalize(jax.random.normal(key, (batch, dim), jnp.float32))

  key = jax.random.key(1)
  kw = dict(options=losses.LossOptions(block_size=block, exchange=exchange))
  if name == "draft":
    loss = on_mesh(lambda i, y, z, s, axis_name: losses.draft_loss(
        i, y, z, s, key=key, axis_name=axis_name, **kw)[0], mesh)
  else:
    loss = on_mesh(lambda i, t, s, axis_name: losses.clip_loss(i, t, s, axis_name=axis_name,
                                                               **kw), mesh)
  emb = [jax.jit(unit, out_shardings=sharding)(k) for k in keys[:3 if name == "draft" else 2]]
  grad = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(emb)))))
  compiled = grad.lower(*emb, jnp.float32(100.0)).compile()
  seconds = _median(lambda: jax.block_until_ready(compiled(*emb, jnp.float32(100.0))), steps)
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    peak, how = stats["peak_bytes_in_use"], "device memory_stats peak_bytes_in_use"
  else:
    mem = compiled.memory_analysis()
    peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)
    how = "compiled memory_analysis (temp + arguments + outputs), per device"
  return {"loss": name, "exchange": exchange, "global_batch": batch, "dim": dim, "block": block,
          "devices": mesh.size, "seconds_per_step": seconds, "peak_bytes": int(peak),
          "peak_from": how}


def largest_loss(name: str, exchange: str, start: int, max_batch: int, **kw) -> dict:
  """`tiled_loss` at the largest power-of-two global batch that runs, doubling from `start`
  (a device's memory, read after the largest, is that batch's: batches only grow)."""
  best, batch = {"loss": name, "exchange": exchange, "global_batch": 0}, start
  while batch <= max_batch:
    try:
      best = tiled_loss(batch, name=name, exchange=exchange, **kw)
    except Exception as e:  # noqa: BLE001 — only out-of-memory ends the search
      if not _is_oom(e):
        raise
      break
    print(f"  {name} {exchange}: {batch:,} runs", flush=True)
    batch *= 2
  return best


def device_info() -> dict:
  import importlib.metadata

  import jax
  import jax.numpy as jnp

  from clipjax.models.layers import attention_kernel, compute_dtype
  dtype = compute_dtype("auto")
  versions = {}
  for package in ("jax", "jaxlib", "flax", "optax", "torch", "open_clip_torch"):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = None
  device = jax.devices()[0]
  return {"backend": jax.default_backend(), "device_kind": device.device_kind,
          "device_count": jax.device_count(), "process_count": jax.process_count(),
          "compute_dtype": jnp.dtype(dtype).name,
          "attention_kernel": attention_kernel("auto", dtype, 64), "versions": versions}


def markdown(results: dict) -> str:
  d = results["device"]
  lines = [f"# bench_device: {d['device_kind']} x {d['device_count']} ({d['backend']})", "",
           f"compute dtype {d['compute_dtype']}, attention kernel {d['attention_kernel']}, "
           + ", ".join(f"{k} {v}" for k, v in d["versions"].items() if v), "",
           "| measurement | clipjax | open_clip | ratio |", "|---|---|---|---|"]
  for e in results["encode"]:
    for kind in ("images", "texts"):
      ours, theirs = e[f"clipjax_{kind}_per_s"], e.get(f"open_clip_{kind}_per_s")
      ratio = f"{ours / theirs:.2f}x" if theirs else "—"
      lines.append(f"| {e['arch']} encode {kind}/s, batch {e['batch']}, {e['dtype']} | "
                   f"{ours:.1f} | {f'{theirs:.1f}' if theirs else e['open_clip']} | {ratio} |")
  t = results["train_step"]
  lines.append(f"| {t['arch']} CLIP train step, batch {t['batch']} (largest power of two "
               f"that fits) | {t['samples_per_s']:.1f} samples/s, {t['model_tflops']:.3g} "
               f"TFLOP/s, MFU {t['mfu']:.1%} | | |")
  loss = results["tiled_loss"]
  lines.append(f"| tiled DRAFT loss step, global batch {loss['global_batch']:,}, D "
               f"{loss['dim']}, block {loss['block']}, {loss['devices']} devices | "
               f"{loss['seconds_per_step']:.3f} s, peak {loss['peak_bytes'] / 2**20:.1f} MiB "
               f"({loss['peak_from']}) | | |")
  for r in results["exchanges"]:
    lines.append(f"| {r['loss']} loss, `{r['exchange']}`: largest global batch that runs "
                 f"(up to {results['ring_max_batch']:,}) | "
                 + (f"{r['global_batch']:,}: {r['seconds_per_step']:.3f} s, peak "
                    f"{r['peak_bytes'] / 2**20:.1f} MiB | | |" if r["global_batch"] else
                    "none | | |"))
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if FLAGS.small:
    archs, batch, repeats = ("ViT-T-16-test",), 8, 3
    train_arch, max_batch, steps, min_batch = "ViT-T-16-test", min(FLAGS.max_batch, 32), 2, 32
    loss_args = dict(batch=min(FLAGS.loss_batch, 512), dim=32, block=128, steps=2)
    # the doubling search's code path at one size (a CPU never runs out of memory here)
    small_ring = min(FLAGS.ring_max_batch, 512)
    ring_args = dict(start=small_ring, max_batch=small_ring, dim=32, block=64, steps=2)
  else:
    archs, batch, repeats = ("ViT-B-16", "ViT-L-14"), 64, 10
    train_arch, max_batch, steps, min_batch = "ViT-B-16", FLAGS.max_batch, 5, 1
    loss_args = dict(batch=FLAGS.loss_batch, dim=512, block=4096, steps=3)
    ring_args = dict(start=FLAGS.loss_batch, max_batch=FLAGS.ring_max_batch, dim=768,
                     block=4096, steps=3)
  results = {"small": FLAGS.small, "device": device_info()}
  print(f"device: {results['device']['device_kind']} x {results['device']['device_count']}",
        flush=True)
  results["encode"] = [encode(a, batch, repeats) for a in archs]
  print("(a) encode done", flush=True)
  results["train_step"] = train_step(train_arch, max_batch, steps, min_batch)
  print("(b) train step done", flush=True)
  results["tiled_loss"] = tiled_loss(**loss_args)
  print("(c) tiled loss done", flush=True)
  results["ring_max_batch"] = ring_args["max_batch"]
  results["exchanges"] = [largest_loss(name, exchange, **ring_args)
                          for name in ("clip", "draft") for exchange in ("all_gather", "ring")]
  print("(d) exchanges done", flush=True)
  with open(FLAGS.out, "w") as f:
    json.dump(results, f, indent=2)
  table = markdown(results)
  with open(FLAGS.md, "w") as f:
    f.write(table)
  print(table)


if __name__ == "__main__":
  cli.run(main)
