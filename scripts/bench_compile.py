r"""Compile time and step time of the CLIP train step: scanned vs unrolled blocks, one run.

  python scripts/bench_compile.py        # ViT-L-14, ViT-SO400M-14-SigLIP, ViT-bigG-14 (CPU)
  python scripts/bench_compile.py --archs=ViT-T-16-test --batch=2 --steps=1   # seconds

For each architecture, the whole CLIP train step (both towers trained, AdamW, the global
contrastive loss; `clipjax.train.step.make_train_step`) is traced, lowered and compiled from
abstract shapes (no weights allocated), once with every tower's blocks unrolled (open_clip's
per-block layout) and once under `nn.scan` (`model.scan_layers=True`). Then, for models whose
weights plus AdamW state fit this machine (--step_max_params), both compiled steps run on the
same random weights and batch: step time, and the loss of each as a check that they compute
the same thing. Each (architecture, layout) runs in a fresh process: cold compile caches and
the machine's whole memory. Prints each figure for both layouts side by side with the ratio
unrolled / scanned.
"""
import json
import subprocess
import sys
import time

from absl import flags

flags.DEFINE_list("archs", ["ViT-L-14", "ViT-SO400M-14-SigLIP", "ViT-bigG-14"],
                  "Architectures, smallest first.")
flags.DEFINE_integer("batch", 2, "Global batch (images and captions).")
flags.DEFINE_integer("steps", 2, "Timed steps (after one warm-up step).")
flags.DEFINE_float("step_max_params", 1.2e9, "Time steps only for models up to this many "
                   "parameters (weights, gradients and two AdamW moments: 16 bytes each).")
flags.DEFINE_string("remat", "", "Remat policy for both layouts (models.layers.REMAT_POLICIES); "
                    "empty: none.")
flags.DEFINE_string("one", "", "Internal: measure one ARCH:scanned|unrolled and print JSON.")
FLAGS = flags.FLAGS


def _state_and_step(cfg, scan: bool, mesh):
  """(abstract train state, jitted step, abstract batch) of CLIP training on `cfg`."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from clipjax.methods import get_method, method_config, run_options
  from clipjax.models.clip import CLIP
  from clipjax.train.optim import make_optimizer
  from clipjax.options import OptimOptions
  from clipjax.train.step import make_train_step

  model = CLIP(cfg, remat=FLAGS.remat or False, scan_layers=scan)
  size, n = cfg.vision.image_size, FLAGS.batch
  images = jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32)
  ids = jax.ShapeDtypeStruct((n, cfg.text.context_length), jnp.int32)
  params = {"clip": jax.eval_shape(model.init, jax.random.key(0), images, ids)["params"]}
  optim = OptimOptions(lr=1e-5, warmup_steps=0, grad_clip_norm=0.0)
  tx, frozen = make_optimizer(params, optim, 100)
  state = {"params": params, "opt_state": jax.eval_shape(tx.init, params),
           "step": jax.ShapeDtypeStruct((), jnp.int32),
           "rng": jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))}
  batch = {"image": jax.ShapeDtypeStruct((n, size, size, 3), jnp.uint8), "caption": ids,
           "image_id": jax.ShapeDtypeStruct((n,), jnp.int64 if jax.config.x64_enabled
                                            else jnp.int32),
           "label": jax.ShapeDtypeStruct((n,), np.int32)}
  objective = get_method("clip").objective(model, mesh, run_options(method_config("clip")))
  return state, make_train_step(objective, tx, frozen, mesh, clamp_scale=True), batch, tx


def _real(batch, cfg, scan: bool, tx):
  """Random weights (the same draws in both layouts), AdamW state and a random batch."""
  import jax
  import numpy as np

  from clipjax.models import create_model
  _, clip = create_model(cfg, scan_layers=scan, remat=FLAGS.remat or False)
  params = {"clip": clip}
  rng = np.random.default_rng(0)
  host = {"image": rng.integers(0, 256, batch["image"].shape, np.uint8),
          "caption": rng.integers(1, 1000, batch["caption"].shape).astype(np.int32),
          "image_id": np.arange(FLAGS.batch, dtype=batch["image_id"].dtype),
          "label": np.zeros(FLAGS.batch, np.int32)}
  return ({"params": params, "opt_state": tx.init(params), "step": np.int32(0),
           "rng": jax.random.key_data(jax.random.key(0))}, host)


def measure(arch: str, scan: bool) -> dict:
  """Trace + lower and compile times of one layout, and its step time when it fits."""
  import jax

  from clipjax.models import get_model_config
  from clipjax.parallel.mesh import make_mesh
  cfg = get_model_config(arch)
  state, step, batch, tx = _state_and_step(cfg, scan, make_mesh())
  start = time.perf_counter()
  lowered = step.lower(state, batch)
  traced = time.perf_counter() - start
  compiled = lowered.compile()
  out = {"traced": traced, "compile": time.perf_counter() - start,
         "params": sum(x.size for x in jax.tree.leaves(state["params"]))}
  if out["params"] <= FLAGS.step_max_params:
    real_state, host = _real(batch, cfg, scan, tx)
    real_state, metrics = compiled(real_state, host)  # warm-up
    out["loss"] = float(metrics["loss"])
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      real_state, metrics = compiled(real_state, host)
    jax.block_until_ready(metrics)
    out["step"] = (time.perf_counter() - start) / FLAGS.steps
  return out


def main(argv):
  del argv
  if FLAGS.one:
    arch, layout = FLAGS.one.rsplit(":", 1)
    print("RESULT " + json.dumps(measure(arch, layout == "scanned")), flush=True)
    return
  import jax

  from clipjax.models import get_model_config
  for arch in FLAGS.archs:  # a typo is one line before any work, not a child's traceback
    get_model_config(arch)
  rows = []
  for arch in FLAGS.archs:
    result = {}
    for scan in (False, True):
      layout = "scanned" if scan else "unrolled"
      run = subprocess.run(
          [sys.executable, __file__, f"--one={arch}:{layout}", f"--batch={FLAGS.batch}",
           f"--steps={FLAGS.steps}", f"--step_max_params={FLAGS.step_max_params}",
           f"--remat={FLAGS.remat}"], capture_output=True, text=True)
      found = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
      if run.returncode != 0 or not found:
        sys.exit(f"{arch} {layout} failed (status {run.returncode}):\n{run.stderr[-3000:]}")
      r = json.loads(found[0][len("RESULT "):])
      result[scan] = (r["traced"], r["compile"],
                      (r["step"], r["loss"]) if "step" in r else None, r["params"])
      print(f"{arch} {layout}: trace+lower {r['traced']:.1f} s, compile total "
            f"{r['compile']:.1f} s" + (f", step {r['step']:.2f} s, first loss {r['loss']:.5f}"
                                        if "step" in r else ""), flush=True)
    rows.append((arch, result))

  print(f"\nCLIP train step, batch {FLAGS.batch}, float32, {jax.devices()[0].platform} "
        f"({jax.device_count()} devices), remat {FLAGS.remat or 'none'}; ratio = unrolled / "
        f"scanned")
  print("| arch | params | compile unrolled | compile scanned | ratio | step unrolled | "
        "step scanned | ratio |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|")
  for arch, r in rows:
    (_, c0, t0, n), (_, c1, t1, _) = r[False], r[True]
    step = (f"{t0[0]:.2f} s | {t1[0]:.2f} s | {t0[0] / t1[0]:.2f}x" if t0 and t1
            else "— | — | —")
    print(f"| {arch} | {n / 1e6:.0f} M | {c0:.1f} s | {c1:.1f} s | {c0 / c1:.1f}x | {step} |")


if __name__ == "__main__":
  from clipjax import cli
  cli.run(main)
