r"""CLIP training-step throughput with and without patch dropout (FLIP), one run.

  python scripts/bench_patch_dropout.py                          # ViT-B-16, batch 16, CPU
  python scripts/bench_patch_dropout.py --patch_dropout=0.75 --batch=256   # on an accelerator

Both towers train (AdamW, the CLIP loss over the batch), random weights and pixels, synthetic
captions with their padding cut as the training loop does. The same step is timed with
`model.patch_dropout` 0 and the given fraction, and the ratio printed with the image tower's
share of the step's model FLOPs (the issue's target on a ViT-B-16: >= 1.6x at 0.5; FLIP
reports ~2x when the image tower dominates).
"""
import time

from absl import flags

from clipjax import cli

flags.DEFINE_string("arch", "ViT-B-16", "Architecture (a ViT or SigLIP image tower).")
flags.DEFINE_integer("batch", 16, "Global batch size.")
flags.DEFINE_integer("steps", 4, "Timed steps (after 2 warm-up steps).")
flags.DEFINE_float("patch_dropout", 0.5, "Fraction of patch tokens dropped per image.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax
  import numpy as np

  import clipjax
  from clipjax.data.synthetic import SyntheticScenes
  from clipjax.methods import get_method, method_config
  from clipjax.parallel.mesh import host_batch_to_global, make_mesh
  from clipjax.train import flops
  from clipjax.train.loop import trim_text_padding
  from clipjax.train.optim import make_optimizer
  from clipjax.train.step import make_train_step

  from clipjax.errors import ConfigError
  model, clip = clipjax.create_model(FLAGS.arch)
  if getattr(model.cfg.vision, "is_resnet", False):
    raise ConfigError(f"--arch={FLAGS.arch} has a ResNet image tower; patch dropout needs a "
                      f"ViT or SigLIP tower (e.g. --arch=ViT-B-16)")
  n, size = FLAGS.batch, model.cfg.vision.image_size
  scenes = SyntheticScenes(n, resolution=32)
  batch = {"image": np.random.default_rng(0).integers(0, 255, (n, size, size, 3), np.uint8),
           "caption": np.asarray(clipjax.get_tokenizer(FLAGS.arch)(
               [scenes[i]["caption"] for i in range(n)])),
           "image_id": np.arange(n)}
  if model.cfg.text.trimmable:
    batch = trim_text_padding(batch, ("caption",))
  cfg, mesh = method_config("clip"), make_mesh()
  rates, step_flops = {}, {}
  for rate in (0.0, FLAGS.patch_dropout):
    m = model.clone(patch_dropout=rate)
    params = {"clip": jax.tree.map(np.array, clip)}  # the step donates its state
    tx, frozen = make_optimizer(params, lr=1e-5, total_steps=100)
    step = make_train_step(get_method("clip").objective(m, mesh, cfg), tx, frozen, mesh,
                           clamp_scale=True)
    state = {"params": params, "opt_state": tx.init(params), "step": np.int32(0),
             "rng": jax.random.key_data(jax.random.key(0))}
    global_batch = host_batch_to_global(batch, mesh)
    for i in range(2 + FLAGS.steps):
      if i == 2:
        start = time.perf_counter()
      state, metrics = step(state, global_batch)
      metrics["loss"].block_until_ready()
    rates[rate] = FLAGS.steps * n / (time.perf_counter() - start)
    step_flops[rate] = flops.step_flops(m, batch, {"caption": "text"},
                                        flops.trainable_towers(frozen))
  image = flops.tower_forward_flops(model, "image")
  text = flops.tower_forward_flops(model, "text", batch["caption"].shape[1])
  print(f"CLIP training step, {FLAGS.arch}, batch {n}, {jax.default_backend()}, both towers; "
        f"the image tower is {image / (image + text):.0%} of the forward FLOPs")
  print(f"  patch_dropout 0:    {rates[0.0]:8.2f} samples/s  "
        f"({step_flops[0.0] / 1e9:.1f} GFLOP/step)")
  print(f"  patch_dropout {FLAGS.patch_dropout:g}:  {rates[FLAGS.patch_dropout]:8.2f} samples/s  "
        f"({step_flops[FLAGS.patch_dropout] / 1e9:.1f} GFLOP/step)   ratio "
        f"{rates[FLAGS.patch_dropout] / rates[0.0]:.2f}x")


if __name__ == "__main__":
  cli.run(main)
