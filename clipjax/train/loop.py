"""The training loop: data -> jitted step on the mesh -> logs and checkpoints (evaluation and
export follow in `clipjax.main`).

Resume is automatic: rerunning the same command with the same work dir continues from the
latest checkpoint (params, optimizer, step, RNG, data position), bitwise identical to an
uninterrupted run on the same machine.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from clipjax.config import DEFAULT_ARCH
from clipjax.convert.load import BuildOptions, load_or_create
from clipjax.data.batch_plan import BatchPlan, batch_plan
from clipjax.data.streams import Encoding, TrainingStreams, image_text_source, training_streams
from clipjax.evaluate.embed import params_fingerprint
from clipjax.methods import Method, get_method
from clipjax.methods.base import run_options
from clipjax.models.layers import compute_dtype
from clipjax.models.lora import DEFAULT_TARGETS, init_lora
from clipjax.models.stacking import rule_names
from clipjax.models.text import padded_length
from clipjax.options import RunOptions
from clipjax.parallel.mesh import host_batch_to_global, make_mesh
from clipjax.parallel.sharding import param_shardings, state_shardings
from clipjax.train import flops, frozen_cache
from clipjax.train.checkpoint import BaseWeights, Checkpointer, PreemptionFlag
from clipjax.train.ema import ema_params, init_ema
from clipjax.train.logs import MetricsLog
from clipjax.train.optim import is_frozen, make_optimizer
from clipjax.train.step import make_train_step
from clipjax.train.workdir import rewind_logs


class TrainingError(RuntimeError):
  """A run that must stop with a non-zero exit (NaN loss)."""


def _model_and_params(cfg: RunOptions, method: Method) -> tuple[Any, dict]:
  """The model and `{"clip": ..., **the method's own towers}`: from model.checkpoint, or
  random (a longer model.context_length interpolates a checkpoint's positions)."""
  m = cfg.model
  build = BuildOptions(context_length=m.context_length or None, dtype=compute_dtype(m.dtype),
                       remat=m.remat and m.remat_policy, attention=m.attention,
                       scan_layers=m.scan_layers)
  model, clip, _, _ = load_or_create(
      m.checkpoint, m.pretrained or None, arch=m.arch or None, default_arch=DEFAULT_ARCH,
      build=build, seed=cfg.seed, init_logit_bias=m.init_logit_bias, warn_random=False)
  if m.patch_dropout:
    model = model.clone(patch_dropout=m.patch_dropout)
  if not m.checkpoint and m.init_logit_scale is not None:
    clip = dict(clip, logit_scale=jnp.full((), m.init_logit_scale, jnp.float32))
  return model, {"clip": clip, **method.init_params(model, clip, cfg)}


def trim_text_padding(batch: dict, text_fields: tuple[str, ...],
                      text_pair_fields: tuple[str, ...] = (), pad_id: int = 0) -> dict:
  """Drops padding columns of the token-id fields (exact, see `models.text.trim_padding`) of
  the image–text batch, or of both streams of a two-stream batch (`text_pair_fields`, see
  `clipjax.data.streams.StreamPlan`). The fields of a stream share one length, a bucket of
  `padded_length` (8, 16, 24, 32, 48, 64, 77 for a 77-token context), agreed by every host
  (global arrays stay rectangular), so the step compiles for at most 7^streams shapes."""
  out = {k: dict(v) if isinstance(v, dict) else v for k, v in batch.items()}
  streams = ([(out["text"], text_pair_fields), (out["image_text"], text_fields)]
             if text_pair_fields else [(out, text_fields)])
  streams = [(part, [f for f in names if f in part]) for part, names in streams]
  lengths = np.asarray([max(padded_length(part[f].reshape(-1, part[f].shape[-1]),
                                          pad_id=pad_id) for f in names)
                        for part, names in streams], np.int32)
  if jax.process_count() > 1:
    lengths = np.asarray(multihost_utils.process_allgather(lengths)).max(axis=0)
  for (part, names), n in zip(streams, lengths):
    for f in names:
      part[f] = part[f][..., :int(n)]
  return out


@dataclasses.dataclass(frozen=True)
class _Run:
  """What the steps of a run share: its method, model, mesh, batch plan, optimizer (and
  frozen mask), the initial train state and its sharding."""
  method: Method
  model: Any
  mesh: Any
  batches: BatchPlan
  tx: Any
  frozen: Any
  state: dict
  sharding: Any
  base: BaseWeights | None = None  # with LoRA: the frozen towers checkpoints leave out


def _setup(cfg: RunOptions, devices: list[jax.Device] | None) -> _Run:
  """The mesh, model, optimizer and initial train state, placed on the mesh."""
  mesh = make_mesh(cfg.mesh.data, cfg.mesh.fsdp, devices)
  method = get_method(cfg.method)
  model, params = _model_and_params(cfg, method)
  batches = batch_plan(cfg, mesh.size, jax.process_count(), model.cfg.naflex_patches)
  freeze, lora, base = cfg.freeze, cfg.lora, None
  if lora.rank:  # adapters on the kernels no freeze rule holds; their towers frozen
    towers = {t: params[t] for t in method.lora_towers}
    params["lora"] = init_lora(towers, lora.rank, tuple(lora.targets) or DEFAULT_TARGETS,
                               freeze, lora.seed)
    freeze = (*(f"^{t}/" for t in towers), *freeze)
    base = BaseWeights(tuple(towers), base_name(cfg), params_fingerprint(towers))
  tx, frozen = make_optimizer(params, cfg.optim, cfg.total_steps, freeze)
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
           "rng": jax.random.key_data(jax.random.key(cfg.seed))}
  if cfg.optim.ema_decay:
    state["ema"] = init_ema(params, frozen)
  sharding = state_shardings(state, tx, mesh, param_shardings(
      params, mesh, cfg.mesh.fsdp_rules, cfg.mesh.fsdp_min_size,
      names=rule_names(params)))
  return _Run(method, model, mesh, batches, tx, frozen, jax.device_put(state, sharding),
              sharding, base=base)


def base_name(cfg: RunOptions) -> str:
  """How a run names the CLIP weights it starts from."""
  m = cfg.model
  if m.checkpoint:
    return f"{m.checkpoint}" + (f" ({m.pretrained})" if m.pretrained else "")
  return f"{m.arch or DEFAULT_ARCH} initialised with seed {cfg.seed}"


def _streams(cfg: RunOptions, run: _Run, workdir: epath.Path
             ) -> tuple[TrainingStreams, frozen_cache.FrozenEmbeddings | None]:
  """The run's training streams and its frozen-tower cache (None: none); with
  data.cache_frozen, the frozen-tower tables first (validate() checked the method,
  augmentation and freeze rules), and with a cached teacher (distill.cached) the teacher's
  tables, made with its own preprocessing and tokenizer."""
  source = image_text_source(cfg.data)
  spec = dict(cfg.data.train, caption_field=cfg.data.caption_field)
  plan = run.batches.lengths
  teacher = run.method.cached_teacher(cfg)
  cache = None
  if teacher is not None:
    model, params = teacher
    cache = frozen_cache.FrozenEmbeddings(
        frozen_cache.build_image_cache(model, params, source, cfg.data.train, workdir,
                                       num_workers=cfg.data.num_workers),
        frozen_cache.build_caption_cache(model, params, source, spec, workdir), "teacher_")
  elif cfg.data.cache_frozen:
    model, clip = run.model, run.state["params"]["clip"]
    images = frozen_cache.build_image_cache(model, clip, source, cfg.data.train, workdir,
                                            num_workers=cfg.data.num_workers,
                                            lengths=plan.lengths if plan else ())
    captions = None
    if run.method.caches_frozen_captions and all(
        is_frozen(f) for path, f in jax.tree_util.tree_leaves_with_path(run.frozen["clip"])
        if getattr(path[0], "key", None) != "visual"):
      captions = frozen_cache.build_caption_cache(model, clip, source, spec, workdir)
    cache = frozen_cache.FrozenEmbeddings(images, captions)
  cached = None if cache is None else (cache.images, cache.captions)
  streams = training_streams(cfg.data, run.method.stream_plan(cfg), Encoding.of(run.model.cfg),
                             run.batches, seed=cfg.seed, workdir=workdir, source=source,
                             cached=cached, cached_prefix=cache.prefix if cache else "")
  return streams, cache


def _fit(cfg: RunOptions, run: _Run, state: dict, streams: TrainingStreams,
         cache: frozen_cache.FrozenEmbeddings | None, ckpt: Checkpointer, logs: MetricsLog,
         workdir: epath.Path) -> dict:
  """Steps from the state's step to cfg.total_steps: logs every log_every steps, checkpoints
  when due, at the end and on a preemption signal (then exits); stops on a NaN loss. Returns
  the final train state."""
  start = int(state["step"])
  step_fn = make_train_step(run.method.objective(run.model, run.mesh, cfg), run.tx, run.frozen,
                            run.mesh, accum_steps=run.batches.accum_steps,
                            clamp_scale=not run.frozen["clip"]["logit_scale"],
                            state_sharding=run.sharding, ema_decay=cfg.optim.ema_decay,
                            ema_warmup=cfg.optim.ema_warmup)
  model, method = run.model, run.method
  trainable = flops.trainable_towers(run.frozen)
  preempt = PreemptionFlag()
  last_saved = start if start else None
  try:
    for step in range(start, cfg.total_steps):
      batch = streams.next_batch(step + 1)
      if cache is not None:
        batch = cache.add_to(batch)
      if cfg.data.trim_text and model.cfg.text.trimmable:
        batch = trim_text_padding(batch, method.text_fields, method.text_pair_fields,
                                  getattr(model.cfg.text, "pad_token_id", 0))
      rows = len(jax.tree.leaves(batch.get("image_text", batch))[0])  # NaFlex: varies
      logs.add_step(jax.process_count() * flops.step_flops(model, batch, method.text_towers(),
                                                            trainable),
                    jax.process_count() * rows)
      state, metrics = step_fn(state, host_batch_to_global(batch, run.mesh))
      done = step + 1
      logs.bar.update(1)
      preempted = preempt.seen()
      saving = preempted or ckpt.due(done) or done == cfg.total_steps
      if done % cfg.log_every == 0 or saving:  # never checkpoint a NaN state
        values = {k: float(v) for k, v in metrics.items()}
        if not math.isfinite(values["loss"]):
          raise TrainingError(
              f"loss is {values['loss']} at step {done}; the last good checkpoint is step "
              f"{last_saved} in {workdir / 'checkpoints'} (lower optim.lr or enable "
              f"optim.grad_clip_norm, then rerun to resume from it)")
        values.update({f"bad_records/{r}": float(n) for r, n in streams.bad_counts().items()})
        logs.write(done, values)
      if saving:
        ckpt.save(done, state, streams.iterator)
        last_saved = done
      if preempted:
        ckpt.wait()
        logging.warning("%s: saved step %d in %s; rerun the same command to resume",
                        preempt.signal_name, done, workdir / "checkpoints")
        raise SystemExit(preempt.exit_code)
  finally:
    preempt.restore_handler()
  return state


def train(cfg: RunOptions | Any, workdir: str, devices: list[jax.Device] | None = None) -> dict:
  """Trains `cfg.method` to `cfg.total_steps` in `workdir` (resuming if it holds a checkpoint).

  cfg: the run's options (`clipjax.train.validate.validate` checks a ConfigDict and returns
  them); a ConfigDict is read as it is.

  devices: the devices of the mesh (default: every device of every host). A subset of one
  process's devices keeps others free in a notebook; on CPU, one device runs a small model
  faster than several simulated ones.
  Returns {"model", "params", "ema_params" (None without optim.ema_decay), "bad_records",
  "steps_run"}."""
  if "://" not in str(workdir):  # orbax needs absolute paths; gs:// etc. already are
    workdir = os.path.abspath(os.path.expanduser(workdir))
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if devices is not None and jax.process_count() > 1:
    raise ValueError("train(devices=...) is for one process; multi-host runs use every device")
  cfg = run_options(cfg)
  run = _setup(cfg, devices)
  streams, cache = _streams(cfg, run, workdir)
  ckpt = Checkpointer(str(workdir / "checkpoints"), cfg.checkpoint.every, cfg.checkpoint.keep,
                      run.base)
  state = run.state
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state, streams.iterator)
    print(f"resumed from {workdir / 'checkpoints'} at step {int(state['step'])}", flush=True)
  start = int(state["step"])
  peak, peak_source = flops.peak_flops(run.mesh.devices.flat[0])
  if jax.process_index() == 0:  # the stage header, above its progress bar
    print(f"{cfg.method}: {streams.num_samples} samples per epoch, global batch "
          f"{run.batches.describe()}, steps {start}..{cfg.total_steps}, mesh {dict(run.mesh.shape)}, "
          f"work dir {workdir}; MFU against {peak / 1e12:.3g} TFLOP/s per device "
          f"({peak_source})", flush=True)
  rewind_logs(workdir, start)  # what an interrupted run logged after its last checkpoint
  logs = MetricsLog(workdir, start, cfg.total_steps, cfg.batch_size, peak, run.mesh.size)
  try:
    state = _fit(cfg, run, state, streams, cache, ckpt, logs, workdir)
  finally:
    logs.close()
    streams.close()
    ckpt.close()
  if streams.summary():
    print(streams.summary(), file=sys.stderr, flush=True)
  # Every host gets the full parameters (FSDP shards live on several hosts' devices).
  gather = lambda tree: jax.tree.map(np.asarray,
                                     multihost_utils.process_allgather(tree, tiled=True))
  params = gather(state["params"])
  ema = ema_params(gather(state["ema"]), params, run.frozen) if "ema" in state else None
  return {"model": run.model, "params": params, "ema_params": ema, "bad_records": streams.bad,
          "steps_run": cfg.total_steps - start}
