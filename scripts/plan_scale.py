r"""Scale on paper: per-device memory, collective bytes and the loss's FLOP share of the DRAFT and
CLIP train steps from 64 to 1,024 chips, fitted to compiled programs on simulated CPU meshes.

  python scripts/plan_scale.py                       # measure, fit, write docs/scaling.md
  python scripts/plan_scale.py --devices=8 --per_device=2,4 --out=/tmp/scaling.md   # quick

Measure: for each mesh size (8, 16, 64 simulated CPU devices, one fresh process each, data
parallel) and per-device batch, the whole train step (ViT-B-16, bfloat16 towers as on an
accelerator, scanned blocks, tiled loss with --block_size keys per tile, AdamW, DRAFT's or
CLIP's freeze rules) is lowered and compiled from abstract shapes, never run. From the
compiled program: XLA's per-device memory (`memory_analysis`: arguments + outputs + temporaries
- aliased donations) and the bytes each collective produces per device, read from the HLO
(ops inside a `while` loop counted once per iteration). The step's batch-dependent memory at
such batches is the towers' activations; what grows with the global batch (the gathered
embeddings, the loss tiles and their gradients) only shows at data-center batches, so the loss
phase (the loss and its gradient with respect to the embeddings) is also compiled alone at
1,024 and 4,096 rows per device (up to 262,144 global).

Fit, per method, by least squares on the points of the meshes but the largest:
  loss(B, N) = l0 + l1·B + l2·B/N             (the loss phase, per device)
  step(b, B, N) = P + a·c + x·(b − c) + loss(B, N)        all-gather(B) = g·B
with b the per-device batch, N devices, c = the sub-batch the towers run at once (b, or b /
accum_steps under GradCache), B = N·b the global batch; P is the weights, gradients and
optimizer state, a·c the tower activations, x the bytes of one sample's input arrays (exact,
from the batch's shapes: GradCache holds the whole per-device batch). The loss phase is fitted
per exchange (`loss.exchange` all_gather and ring; the steps are measured with the all-gather). Adding the loss phase to the towers' activations
is exact without GradCache (the activations are live during the loss) and an upper bound with
it. The largest mesh's points and a GradCache point are predicted, not fitted, and the report
prints prediction against measurement.

The loss's share of step FLOPs is analytic: the similarity matmuls (2·B²·D per matrix per
pass; DRAFT has two, caption-image and dialogue-image, with gradients into the text side
only) against the towers' model FLOPs (clipjax/train/flops.py, 77-token texts).
"""
import itertools
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
from absl import flags

flags.DEFINE_string("arch", "ViT-B-16", "Architecture.")
flags.DEFINE_list("methods", ["draft", "clip"], "Methods.")
flags.DEFINE_list("devices", ["8", "16", "64"], "Simulated mesh sizes (fit: all but the "
                  "largest; the largest is held out).")
flags.DEFINE_list("per_device", ["4", "8", "16"], "Per-device batches measured.")
flags.DEFINE_integer("block_size", 256, "Tiled loss: keys per tile.")
flags.DEFINE_list("loss_per_device", ["1024", "4096"], "Loss phase alone: per-device batches.")
flags.DEFINE_integer("chunk", 64, "Plan: the per-device sub-batch under GradCache.")
flags.DEFINE_string("out", "docs/scaling.md", "Markdown report.")
flags.DEFINE_string("json", "", "Also write the measured points here.")
flags.DEFINE_integer("one", 0, "Internal: measure on this many simulated devices, print JSON.")
flags.DEFINE_bool("exchanges", False, "Only the loss-memory-by-exchange section: measure it and "
                  "replace that section of --out, leaving the rest.")
flags.DEFINE_list("exchange_devices", ["8", "64"], "Exchange section: mesh sizes.")
flags.DEFINE_list("exchange_batches", ["65536", "262144", "1048576", "4194304"],
                  "Exchange section: global batches.")
flags.DEFINE_integer("exchange_dim", 768, "Exchange section: embedding width (ViT-L-14's).")
flags.DEFINE_integer("exchange_block", 1024, "Exchange section: keys (and query rows) per tile.")
flags.DEFINE_integer("one_exchange", 0, "Internal: the exchange section on this many devices.")
flags.DEFINE_bool("largest", False, "Only the largest-batch-per-chip section of --arch: measure "
                  "on the meshes of --devices (all fitted), replace that section of --out.")
flags.DEFINE_list("chip_counts", ["64", "1024"], "Largest-batch section: chips.")
FLAGS = flags.FLAGS

def measure(devices: int, per_device: list[int]) -> list[dict]:
  """Compile each (method, per-device batch) on this process's simulated mesh."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from clipjax.methods import get_method, method_config, run_options
  from clipjax.models import get_model_config
  from clipjax.models.clip import CLIP
  from clipjax.parallel.hlo_stats import collective_bytes
  from clipjax.parallel.mesh import BATCH_AXES, make_mesh
  from clipjax.train.optim import make_optimizer
  from clipjax.options import OptimOptions
  from clipjax.train.step import make_train_step

  assert jax.device_count() == devices, jax.device_count()
  mesh = make_mesh()
  cfg_model = get_model_config(FLAGS.arch)
  model = CLIP(cfg_model, dtype=jnp.bfloat16, scan_layers=True)
  size, ctx = cfg_model.vision.image_size, cfg_model.text.context_length
  rep, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P(BATCH_AXES))
  params = {"clip": jax.eval_shape(model.init, jax.random.key(0),
                                   jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
                                   jax.ShapeDtypeStruct((1, ctx), jnp.int32))["params"]}
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), params)
  def abstract_batch(name: str, n: int) -> dict:
    batch = {"image": jax.ShapeDtypeStruct((n, size, size, 3), jnp.uint8, sharding=rows),
             "caption": jax.ShapeDtypeStruct((n, ctx), jnp.int32, sharding=rows),
             "image_id": jax.ShapeDtypeStruct((n,), jnp.int32, sharding=rows),
             "label": jax.ShapeDtypeStruct((n,), jnp.int32, sharding=rows)}
    if name == "draft":
      batch["dialogue"] = batch["caption"]
    return batch

  def input_bytes(name: str) -> int:  # one sample of the batch's arrays, exact from the shapes
    return sum(math.prod(x.shape[1:]) * x.dtype.itemsize
               for x in abstract_batch(name, 1).values())

  def memory_of(compiled) -> int:
    mem = compiled.memory_analysis()
    return (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes)

  key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=rep)
  points = []
  for name in FLAGS.methods:
    cfg = method_config(name)
    cfg.loss.block_size = FLAGS.block_size
    cfg.loss.exchange = "all_gather"  # the steps; the loss phase alone is measured under both
    optim = OptimOptions(lr=1e-5, warmup_steps=0, grad_clip_norm=0.0)
    tx, frozen = make_optimizer(params, optim, 100, cfg.freeze)
    opt = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                       jax.eval_shape(tx.init, params))
    state = {"params": params, "opt_state": opt,
             "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
             "rng": jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)}
    objective = get_method(name).objective(model, mesh, run_options(cfg))
    # GradCache (4 sub-batches) on the smallest mesh: a held-out check of the sub-batch term
    smallest = devices == min(int(d) for d in FLAGS.devices) and max(per_device) % 4 == 0
    cases = [(b, 1) for b in per_device] + ([(max(per_device), 4)] if smallest else [])
    for b, accum in cases:
      n = b * devices
      step = make_train_step(objective, tx, frozen, mesh, clamp_scale=True, accum_steps=accum)
      compiled = step.lower(state, abstract_batch(name, n)).compile()
      points.append({"kind": "step", "method": name, "devices": devices, "per_device": b,
                     "accum": accum, "global": n, "exchange": "all_gather",
                     "input_bytes": input_bytes(name), "memory": memory_of(compiled),
                     "weights": compiled.memory_analysis().argument_size_in_bytes,
                     "collectives": collective_bytes(compiled.as_text())})
      print(json.dumps(points[-1]), file=sys.stderr, flush=True)
    # The loss phase alone at data-center batches: the loss and its gradient with respect to
    # the embeddings, what a step adds on top of its towers (jit drops the unused weights from
    # its arguments: only the logit scale is counted).
    for exchange, b in itertools.product(("all_gather", "ring"), FLAGS.loss_per_device):
      n = int(b) * devices
      batch = abstract_batch(name, n)
      cfg.loss.exchange = exchange
      objective = get_method(name).objective(model, mesh, run_options(cfg))
      emb = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rows),
                         jax.eval_shape(objective.embed, params, batch))
      grad = jax.jit(lambda p, e, bt, k: jax.value_and_grad(
          lambda e: objective.loss(p, e, bt, k), has_aux=True)(e))
      compiled = grad.lower(params, emb, batch, key).compile()
      points.append({"kind": "loss", "method": name, "devices": devices, "per_device": int(b),
                     "accum": 1, "global": n, "exchange": exchange,
                     "memory": memory_of(compiled),
                     "collectives": collective_bytes(compiled.as_text())})
      print(json.dumps(points[-1]), file=sys.stderr, flush=True)
  return points


EXCHANGE_HEADING = "## Loss memory by exchange"


def measure_exchanges(devices: int) -> list[dict]:
  """Per-device memory of the loss phase (value and gradient with respect to every embedding,
  float32, tiled) of the CLIP, SigLIP and DRAFT (rff MMD) losses, compiled for each global
  batch and exchange."""
  import functools

  import jax
  import jax.numpy as jnp

  from clipjax import losses
  from clipjax.parallel.mesh import make_mesh, on_mesh
  mesh = make_mesh()
  key = jax.random.key(0)
  fns = {"clip": (losses.clip_loss, 2),
         "siglip": (lambda i, t, s, **kw: losses.siglip_loss(i, t, s, jnp.float32(-10.0), **kw),
                    2),
         "draft": (lambda i, y, z, s, **kw: losses.draft_loss(i, y, z, s, key=key, **kw)[0], 3)}
  points = []
  for name, (fn, count) in fns.items():
    for batch in (int(b) for b in FLAGS.exchange_batches):
      x = jax.ShapeDtypeStruct((batch, FLAGS.exchange_dim), jnp.float32)
      for exchange in ("all_gather", "ring"):
        options = losses.LossOptions(block_size=FLAGS.exchange_block, exchange=exchange)
        loss = on_mesh(functools.partial(fn, options=options), mesh)
        step = jax.jit(jax.value_and_grad(lambda *e: loss(*e, jnp.float32(10.0)),
                                          tuple(range(count))))
        mem = step.lower(*[x] * count).compile().memory_analysis()
        points.append({"loss": name, "devices": devices, "global": batch, "exchange": exchange,
                       "memory": mem.argument_size_in_bytes + mem.output_size_in_bytes
                       + mem.temp_size_in_bytes - mem.alias_size_in_bytes})
        print(json.dumps(points[-1]), file=sys.stderr, flush=True)
  return points


def report_exchanges(points: list[dict]) -> str:
  gib = 2**30
  lines = [EXCHANGE_HEADING, "",
           f"Generated by `python scripts/plan_scale.py --exchanges` (do not edit by hand): the "
           f"loss phase alone (value and gradient with respect to every [B, "
           f"{FLAGS.exchange_dim}] float32 embedding, {FLAGS.exchange_block} keys and query "
           f"rows per tile; DRAFT: contrastive + rff MMD), per device, GiB, compiled for "
           f"simulated CPU meshes, never run. `all_gather`: every device holds the global "
           f"batch's keys and their gradient; `ring` (`loss.exchange=ring`, "
           f"clipjax/losses/ring.py): each device holds its own rows, their gradients and two "
           f"halves of a moving shard (held and arriving), so its memory follows B / N.", ""]
  for name in sorted({p["loss"] for p in points}):
    lines += [f"**{name}**", "", "| global batch | devices | all_gather | ring | ratio |",
              "|---|---|---|---|---|"]
    for devices in sorted({p["devices"] for p in points}):
      for batch in sorted({p["global"] for p in points}):
        got = {p["exchange"]: p["memory"] for p in points
               if (p["loss"], p["devices"], p["global"]) == (name, devices, batch)}
        if len(got) == 2:
          lines.append(f"| {batch:,} | {devices} | {got['all_gather'] / gib:.2f} | "
                       f"{got['ring'] / gib:.2f} | {got['all_gather'] / got['ring']:.1f}x |")
    lines.append("")
  return "\n".join(lines)


def _run_child(flag: str, devices: str, extra: list[str]) -> list[dict]:
  """This script on `devices` simulated CPU devices in a fresh process; its RESULT points."""
  kept = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                os.environ.get("XLA_FLAGS", ""))  # the user's other XLA flags stay
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"{kept} --xla_force_host_platform_device_count={devices}".strip())
  run = subprocess.run([sys.executable, __file__, f"--{flag}={devices}", *extra], env=env,
                       capture_output=True, text=True)
  found = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
  if run.returncode != 0 or not found:
    sys.exit(f"{devices} devices failed (status {run.returncode}):\n{run.stderr[-3000:]}")
  return json.loads(found[0][len("RESULT "):])


def _replace_section(text: str, section: str) -> str:
  """`text` with the section of `section`'s heading (its first line) replaced by `section`
  (appended when absent)."""
  heading = section.split("\n", 1)[0] + "\n"
  if heading not in text:
    return text.rstrip("\n") + "\n\n" + section
  head, rest = text.split(heading, 1)
  tail = rest.split("\n## ", 1)
  return head + section + ("\n## " + tail[1] if len(tail) > 1 else "")


def lstsq(rows: list[list[float]], y: list[float]) -> np.ndarray:
  coef, *_ = np.linalg.lstsq(np.array(rows, float), np.array(y, float), rcond=None)
  return coef


def _loss_fit(points: list[dict], exchange: str) -> np.ndarray:
  loss = [p for p in points if p["kind"] == "loss" and p["exchange"] == exchange]
  return lstsq([[1, p["global"], p["global"] / p["devices"]] for p in loss],
               [p["memory"] for p in loss])


class Fit:
  """The per-method model of the module docstring, fitted on `points` (dicts as measured),
  with the loss phase under `exchange` (the steps are measured with the all-gather, whose
  loss-phase fit is taken off them)."""

  def __init__(self, points: list[dict], exchange: str = "all_gather"):
    self.loss = _loss_fit(points, exchange)
    gathered = _loss_fit(points, "all_gather")
    step = [p for p in points if p["kind"] == "step" and p["accum"] == 1]
    self.step = lstsq([[1, p["per_device"]] for p in step],
                      [p["memory"] - float(gathered @ [1, p["global"], p["global"] / p["devices"]])
                       for p in step])
    self.input = step[0]["input_bytes"]
    self.gather = lstsq([[p["global"]] for p in step],
                        [p["collectives"].get("all-gather", 0) for p in step])[0]
    self.reduce = float(np.mean([p["collectives"].get("all-reduce", 0) for p in step]))

  def loss_memory(self, batch: int, devices: int) -> float:
    return float(self.loss @ [1, batch, batch / devices])

  def memory(self, per_device: int, accum: int, devices: int) -> float:
    """Towers at a sub-batch of per_device / accum, the rest of the batch's input arrays
    (GradCache holds the whole per-device batch) and the loss phase."""
    chunk = per_device / accum
    return (float(self.step @ [1, chunk]) + self.input * (per_device - chunk)
            + self.loss_memory(per_device * devices, devices))

  def all_gather(self, batch: int) -> float:
    return self.gather * batch


def loss_share(method: str, global_batch: int) -> float:
  """The similarity matmuls' share of the step's FLOPs (towers: clipjax/train/flops.py)."""
  from clipjax.models import get_model_config
  from clipjax.models.clip import CLIP
  from clipjax.train import flops
  cfg = get_model_config(FLAGS.arch)
  model = CLIP(cfg)
  image, text = (flops.tower_forward_flops(model, "image"),
                 flops.tower_forward_flops(model, "text", cfg.text.context_length))
  row = 2 * global_batch * cfg.embed_dim  # one query row of one similarity matrix, one pass
  if method == "draft":  # frozen image tower (forward), captions and dialogues trained
    towers, loss = image + 2 * 3 * text, row * 2 * 2  # two matrices; forward + text gradient
  else:
    towers, loss = 3 * (image + text), row * 3  # one matrix; forward + both gradients
  return loss / (loss + towers)  # both per sample


def report(points: list[dict]) -> str:
  largest = max(int(d) for d in FLAGS.devices)
  mib, gib = 2**20, 2**30
  lines = [
      "# Scaling on paper",
      "",
      f"Generated by `python scripts/plan_scale.py` (do not edit by hand). {FLAGS.arch}, "
      f"bfloat16 towers, scanned blocks without remat, tiled loss ({FLAGS.block_size} keys per "
      "tile), AdamW, data parallel (weights, gradients and AdamW state replicated: ViT-B-16's "
      "150 M parameters take 2.4 GB that way, so FSDP buys little at this size). The model of "
      "the fit and how each figure is measured: the script's docstring. Programs are compiled "
      "for simulated CPU meshes, never run: XLA's TPU and GPU compilers fuse, rematerialise and "
      "lay out differently, so read the memory as an estimate (tens of percent) and the "
      "collective bytes as exact counts of what the program moves.",
      "",
  ]
  for method in FLAGS.methods:
    pts = [p for p in points if p["method"] == method and p["exchange"] == "all_gather"]
    train = [p for p in pts if p["devices"] != largest and p["accum"] == 1]
    held = [p for p in pts if p not in train]
    fit = Fit(train)
    accum = [p for p in pts if p["accum"] > 1]
    same = [p for p in pts if accum and p["kind"] == "step" and p["accum"] == 1
            and p["devices"] == accum[0]["devices"] and p["per_device"] == accum[0]["per_device"]]
    factor = (accum[0]["collectives"].get("all-reduce", 0)
              / same[0]["collectives"].get("all-reduce", 1)) if accum and same else 1.0
    lines += [f"## {method.upper()}", "",
              f"Fit on {len(train)} points (meshes of {sorted({p['devices'] for p in train})} "
              f"devices): step = {fit.step[0] / gib:.2f} GiB + {fit.step[1] / mib:.0f} MiB x "
              f"sub-batch + loss phase; loss phase = {fit.loss[0] / mib:.0f} MiB + "
              f"{fit.loss[1] / 2**10:.2f} KiB x global batch + {fit.loss[2] / 2**10:.1f} KiB x "
              f"per-device batch; all-gather = {fit.gather / 2**10:.2f} KiB x global batch; "
              f"all-reduce = {fit.reduce / mib:.0f} MiB per step (the gradient), "
              f"x{factor:.2f} with {accum[0]['accum'] if accum else 1} GradCache sub-batches.",
              "",
              "Held-out points (not used by the fit): measured vs predicted.", "",
              "| program | devices | per device | accum | global | memory measured | predicted | "
              "error | all-gather measured | predicted |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in held:
      m = p["memory"]
      pm = (fit.loss_memory(p["global"], p["devices"]) if p["kind"] == "loss"
            else fit.memory(p["per_device"], p["accum"], p["devices"]))
      a = p["collectives"].get("all-gather", 0)
      lines.append(f"| {p['kind']} | {p['devices']} | {p['per_device']} | {p['accum']} | "
                   f"{p['global']:,} | {m / gib:.2f} GiB | {pm / gib:.2f} GiB | "
                   f"{(pm - m) / m:+.1%} | {a / mib:.2f} MiB | "
                   f"{fit.all_gather(p['global']) / mib:.2f} MiB |")
    lines += ["", f"Plan: towers run GradCache sub-batches of at most {FLAGS.chunk} per device "
              f"(`optim.accum_steps` = per-device batch / {FLAGS.chunk}). Fits: the predicted "
              "memory is within the chip's HBM (16 GB: TPU v5e; 32 GB: TPU v4; 95 GB: TPU v5p; "
              "80 GB A100 / H100 fall between). Collectives are per device per step.", "",
              "| global batch | chips | per device | accum | memory / device | 16 GB | 32 GB | "
              "95 GB | all-gather | all-reduce | loss share of FLOPs |",
              "|---:|---:|---:|---:|---:|:-:|:-:|:-:|---:|---:|---:|"]
    largest_on_16, all_fit_32 = 0, True
    for batch in (32768, 65536, 131072, 262144, 524288, 1048576):
      share = loss_share(method, batch)
      for chips in (64, 256, 1024):
        b = batch // chips
        k = max(1, b // FLAGS.chunk)
        m = fit.memory(b, k, chips)
        fits = ["yes" if m <= gb * 1e9 else "no" for gb in (16, 32, 95)]
        largest_on_16 = max(largest_on_16, batch if fits[0] == "yes" else 0)
        all_fit_32 = all_fit_32 and fits[1] == "yes"
        # GradCache reduces its summed gradient once: the bytes measured with sub-batches hold
        # for any number of them (tested in tests/train/test_step.py)
        reduce = fit.reduce * (factor if k > 1 else 1)
        lines.append(f"| {batch:,} | {chips} | {b} | {k} | {m / gib:.1f} GiB | "
                     f"{' | '.join(fits)} | {fit.all_gather(batch) / mib:,.0f} MiB | "
                     f"{reduce / gib:.1f} GiB | {share:.1%} |")
    lines += ["", f"Reading it: the weights and optimizer state ({fit.step[0] / gib:.1f} GiB) and "
              f"{FLAGS.chunk} samples of tower activations take most of a chip; the loss phase "
              f"adds {fit.loss[1] / 2**10:.0f} KiB per global sample, so on 16 GB chips the "
              f"largest global batch of the table is {largest_on_16:,} (remat, "
              "`model.remat=True`, or a smaller sub-batch buys more), and "
              + ("every batch fits on 32 GB and larger chips. " if all_fit_32 else
                 "some need more than 32 GB. ")
              + "The all-gather of embeddings grows with the global batch "
              "only (the chip count does not matter), and stays below a GiB per step up to "
              "256k. The loss's FLOP share stays small: the towers dominate the step. "
              + (f"GradCache all-reduces the gradient once per step whatever the number of "
                 f"sub-batches ({factor:.2f}x the plain step's bytes, measured at 4): each "
                 "device sums its sub-batches' gradients before the one reduction"
                 + (" (the plain step reduces the text tower's gradient once per text stream, "
                    "captions and dialogues, hence twice the bytes)." if factor < 0.75 else ".")
                 if factor < 1.5 else
                 f"GradCache multiplies the gradient's all-reduce by the number of sub-batches "
                 f"({factor:.1f}x measured at 4)."), ""]
  lines += ["Measured points (`loss ring`: the loss phase with `loss.exchange=ring`):", "",
            "| program | method | devices | per device | accum | global |"
            " memory | all-gather | all-reduce | other collectives |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for p in points:
    c = p["collectives"]
    other = sum(v for k, v in c.items() if k not in ("all-gather", "all-reduce"))
    program = p["kind"] + (" ring" if p["exchange"] == "ring" else "")
    lines.append(f"| {program} | {p['method']} | {p['devices']} | {p['per_device']} | "
                 f"{p['accum']} | {p['global']:,} | {p['memory'] / gib:.2f} GiB | "
                 f"{c.get('all-gather', 0) / mib:.2f} MiB | {c.get('all-reduce', 0) / mib:.1f} MiB"
                 f" | {other / mib:.2f} MiB |")
  return "\n".join(lines) + "\n"


LARGEST_HEADING = "## Largest global batch per chip"
CHIP_GB = (16, 32, 95)


def report_largest(points: list[dict]) -> str:
  """The largest global batch fitting each chip size, per method and exchange (`Fit` on every
  measured point; powers of two per device, towers in the largest GradCache sub-batch of at
  most --chunk that fits)."""
  lines = [f"{LARGEST_HEADING}: {FLAGS.arch}", "",
           f"Generated by `python scripts/plan_scale.py --largest --arch={FLAGS.arch}` (do not "
           f"edit by hand): the largest global batch (a power of two per chip) whose predicted "
           f"per-device memory fits the chip's HBM, with the towers in the largest GradCache "
           f"sub-batch (a power of two, at most {FLAGS.chunk} per device) that fits, bfloat16 "
           f"towers, {FLAGS.block_size} keys per loss tile and "
           f"the fit of the module docstring on {len(points)} compiled programs (meshes of "
           f"{sorted({p['devices'] for p in points})} devices; the batch's input arrays, "
           f"{points[0]['input_bytes'] / 2**10:.0f} KiB per sample, held whole). `all_gather`: "
           "the loss holds the global batch's embeddings, so the limit is a global batch "
           "whatever the chip count; `ring`: the loss follows the device's rows, so the limit "
           "grows with the chips. Estimates from CPU-compiled programs (tens of percent).", "",
           "| method | exchange | chips | " + " | ".join(f"{gb} GB" for gb in CHIP_GB) + " |",
           "|---|---|---:|" + "---:|" * len(CHIP_GB)]
  for method, exchange in itertools.product(FLAGS.methods, ("all_gather", "ring")):
    fit = Fit([p for p in points if p["method"] == method], exchange)
    for chips in (int(c) for c in FLAGS.chip_counts):
      cells = []
      for gb in CHIP_GB:
        fits = [(b, c) for b in (2 ** e for e in range(25))
                for c in (2 ** e for e in range(FLAGS.chunk.bit_length()))
                if c <= min(b, FLAGS.chunk) and fit.memory(b, b // c, chips) <= gb * 1e9]
        b, c = max(fits) if fits else (0, 0)
        cells.append(f"{b * chips:,} ({b:,} per chip, sub-batch {c})" if fits else "none")
      lines.append(f"| {method} | {exchange} | {chips:,} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _write_section(section: str) -> None:
  """Replace (or append) `section` in --out, leaving the rest of the report."""
  previous = open(FLAGS.out).read() if os.path.exists(FLAGS.out) else ""
  with open(FLAGS.out, "w") as f:
    f.write(_replace_section(previous, section))
  print(section)


def _measure_all() -> list[dict]:
  points = []
  for devices in FLAGS.devices:
    args = [f"--arch={FLAGS.arch}", f"--methods={','.join(FLAGS.methods)}",
            f"--devices={','.join(FLAGS.devices)}",
            f"--per_device={','.join(FLAGS.per_device)}", f"--block_size={FLAGS.block_size}",
            f"--loss_per_device={','.join(FLAGS.loss_per_device)}"]
    points += _run_child("one", devices, args)
    print(f"{devices} devices: {len(points)} points so far", flush=True)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(points, f, indent=1)
  return points


def main(argv):
  del argv
  per_device = [int(b) for b in FLAGS.per_device]
  if FLAGS.one:
    print("RESULT " + json.dumps(measure(FLAGS.one, per_device)), flush=True)
    return
  if FLAGS.one_exchange:
    print("RESULT " + json.dumps(measure_exchanges(FLAGS.one_exchange)), flush=True)
    return
  from clipjax.errors import ConfigError
  from clipjax.methods import get_method
  from clipjax.models import get_model_config
  get_model_config(FLAGS.arch)  # typos are one line before any work, not a child's traceback
  for name in FLAGS.methods:
    get_method(name)
  out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
  if not os.path.isdir(out_dir):
    raise ConfigError(f"--out={FLAGS.out}: directory {out_dir} does not exist")
  if FLAGS.largest:  # this arch's section only, in the report as it is
    _write_section(report_largest(_measure_all()))
    return
  exchange_args = [f"--exchange_batches={','.join(FLAGS.exchange_batches)}",
                   f"--exchange_dim={FLAGS.exchange_dim}",
                   f"--exchange_block={FLAGS.exchange_block}"]
  section = report_exchanges([p for devices in FLAGS.exchange_devices
                              for p in _run_child("one_exchange", devices, exchange_args)])
  if FLAGS.exchanges:  # this section only, in the report as it is
    _write_section(section)
    return
  points = _measure_all()
  text = _replace_section(_replace_section(report(points), section), report_largest(points))
  if os.path.exists(FLAGS.out):  # other architectures' largest-batch sections stay
    for other in open(FLAGS.out).read().split("\n## ")[1:]:
      if other.startswith(LARGEST_HEADING[3:]) and not other.startswith(
          f"{LARGEST_HEADING[3:]}: {FLAGS.arch}\n"):
        text = _replace_section(text, "## " + other.rstrip("\n") + "\n")
  with open(FLAGS.out, "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  from clipjax import cli
  cli.run(main)
