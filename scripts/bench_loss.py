r"""Time and peak memory of a global-batch loss (forward and backward, embedding dim 512) on 8
simulated CPU devices, side by side in one run: the full DRAFT loss (two contrastive terms +
RFF MMD) dense vs tiled, or any of the DRAFT / CLIP / SigLIP losses tiled with each exchange
(all-gather vs the ring of clipjax/losses/ring.py, ring_mmd.py).

  python scripts/bench_loss.py                          # DRAFT, global batch 4096, 16384, 65536
  python scripts/bench_loss.py --batches=4096 --block=1024
  python scripts/bench_loss.py --loss=clip --paths=tiled,ring --batches=65536
  python scripts/bench_loss.py --paths=tiled,ring --batches=16384 --num_features=8

Simulated devices share the machine's cores, so ring vs all-gather measures the ring's
overhead (more, smaller steps), not the overlap of its transfers.

Each (batch, path) runs in a fresh subprocess so its peak RSS is its own. A dense
configuration whose compiled per-device temporaries (memory_analysis) exceed --max_gb in
total is reported as not fitting instead of being run.
"""
import json
import os
import resource
import subprocess
import sys
import time

from absl import flags

from clipjax import cli

flags.DEFINE_list("batches", ["4096", "16384", "65536"], "Global batch sizes.")
flags.DEFINE_integer("block", 1024, "Column block of the tiled path.")
flags.DEFINE_list("paths", ["dense", "tiled"], "Which paths to measure: dense, tiled (the "
                  "all-gather exchange) and, for clip / siglip, ring.")
flags.DEFINE_enum("loss", "draft", ["draft", "clip", "siglip"], "The loss.")
flags.DEFINE_integer("num_features", 64, "RFF features per bandwidth (peak memory does not "
                     "depend on it: features are looped inside each tile; time is ~linear).")
flags.DEFINE_integer("dim", 512, "Embedding dimension.")
flags.DEFINE_integer("repeats", 3, "Timed steps (1 at the largest batch).")
flags.DEFINE_float("max_gb", 16.0, "Memory budget for running a configuration.")
flags.DEFINE_string("worker", None, "Internal: 'batch,path' to measure in this process.")
FLAGS = flags.FLAGS


def measure(batch: int, path: str) -> dict:
  import jax
  import jax.numpy as jnp

  from clipjax import losses
  from clipjax.models.clip import l2_normalize
  from clipjax.parallel.mesh import make_mesh, on_mesh

  mesh = make_mesh()
  keys = jax.random.split(jax.random.key(0), 3)
  embs = [l2_normalize(jax.random.normal(k, (batch, FLAGS.dim))) for k in keys]
  block = None if path == "dense" else FLAGS.block
  options = losses.LossOptions(block_size=block,
                               exchange="ring" if path == "ring" else "all_gather")
  if FLAGS.loss == "draft":
    loss = on_mesh(lambda i, y, z, s, key, axis_name: losses.draft_loss(
        i, y, z, s, key=key, mmd=losses.MMDConfig(num_features=FLAGS.num_features),
        options=options, axis_name=axis_name)[0], mesh)
    step = jax.jit(jax.value_and_grad(loss, argnums=(1, 2)))
    args = (*embs, jnp.float32(100.0), jax.random.key(1))
  else:
    fn = {"clip": losses.clip_loss,
          "siglip": lambda i, t, s, **kw: losses.siglip_loss(i, t, s, jnp.float32(-10.0), **kw)}
    loss = on_mesh(lambda i, t, s, axis_name: fn[FLAGS.loss](
        i, t, s, options=options, axis_name=axis_name), mesh)
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    args = (*embs[:2], jnp.float32(10.0))
  compiled = step.lower(*args).compile()
  mem = compiled.memory_analysis()
  temp_gb = mem.temp_size_in_bytes * jax.device_count() / 1e9 if mem else float("nan")
  result = dict(batch=batch, path=path, temp_gb_all_devices=temp_gb)
  if temp_gb > FLAGS.max_gb:
    return dict(result, fits=False)
  jax.block_until_ready(compiled(*args))
  repeats = 1 if batch >= 65536 else FLAGS.repeats
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux -> ~GB
  return dict(result, fits=True, seconds=min(times), peak_rss_gb=peak_gb)


def main(argv):
  del argv
  if FLAGS.worker:
    batch, path = FLAGS.worker.split(",")
    print("RESULT " + json.dumps(measure(int(batch), path)), flush=True)
    return
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  rows = []
  for batch in (int(b) for b in FLAGS.batches):
    for path in FLAGS.paths:
      cmd = [sys.executable, __file__, f"--worker={batch},{path}", f"--dim={FLAGS.dim}",
             f"--repeats={FLAGS.repeats}", f"--max_gb={FLAGS.max_gb}", f"--loss={FLAGS.loss}",
             f"--num_features={FLAGS.num_features}", f"--block={FLAGS.block}"]
      out = subprocess.run(cmd, env=env, capture_output=True, text=True)
      lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
      row = json.loads(lines[0][7:]) if lines else dict(batch=batch, path=path,
                                                        error=out.stderr[-4000:])
      rows.append(row)
      print(json.dumps(row), flush=True)
  features = f", RFF features {FLAGS.num_features}" if FLAGS.loss == "draft" else ""
  print(f"\n{FLAGS.loss} loss fwd+bwd, dim {FLAGS.dim}{features}, 8 simulated CPU devices, "
        f"tiled block {FLAGS.block}")
  print(f"{'batch':>7s} {'path':>6s} {'seconds':>9s} {'peak RSS GB':>12s} {'temp GB':>8s}  "
        f"vs dense / vs tiled")
  by_key = {(r["batch"], r["path"]): r for r in rows}
  for r in rows:
    secs = f"{r['seconds']:.2f}" if "seconds" in r else ("no fit" if r.get("fits") is False else "error")
    rss = f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else "-"
    ratio = ""
    base = by_key.get((r["batch"], {"tiled": "dense", "ring": "tiled"}.get(r["path"], "")), {})
    if "seconds" in r and "seconds" in base:
      ratio = f"{r['seconds'] / base['seconds']:.2f}x"
    print(f"{r['batch']:7d} {r['path']:>6s} {secs:>9s} {rss:>12s} "
          f"{r.get('temp_gb_all_devices', float('nan')):8.2f}  {ratio}")


if __name__ == "__main__":
  cli.run(main)
