"""The training loop: data -> jitted step on the mesh -> logs and checkpoints (evaluation and
export follow in `clipjax.main`).

Resume is automatic: rerunning the same command with the same work dir continues from the
latest checkpoint (params, optimizer, step, RNG, data position), bitwise identical to an
uninterrupted run on the same machine.
"""
from __future__ import annotations

import functools
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
from clipjax.convert.load import load_or_create
from clipjax.data.builder import make_source
from clipjax.data.pipeline import (
  DEFAULT_MAX_IMAGE_PIXELS,
  PrepareExample,
  PrepareText,
  TwoStreams,
  build_dataset,
  synthetic_text_records,
)
from clipjax.data.records import BAD_REASONS
from clipjax.data.views import CachedInputs, MapRecords, OneQAPerSample
from clipjax.methods import Method, get_method
from clipjax.models.layers import compute_dtype
from clipjax.models.text import padded_length
from clipjax.parallel.mesh import host_batch_to_global, make_mesh
from clipjax.parallel.sharding import param_shardings, state_shardings
from clipjax.train import flops, frozen_cache
from clipjax.train.checkpoint import Checkpointer, PreemptionFlag
from clipjax.train.logs import BadRecordLog, MetricsLog
from clipjax.train.optim import is_frozen, make_optimizer
from clipjax.train.step import make_train_step
from clipjax.train.workdir import rewind_logs


class TrainingError(RuntimeError):
  """A run that must stop with a non-zero exit (NaN loss)."""


def _model_and_params(cfg, method: Method) -> tuple[Any, dict]:
  """The model and `{"clip": ..., **the method's own towers}`: from model.checkpoint, or
  random (a longer model.context_length interpolates a checkpoint's positions)."""
  model, clip, _, _ = load_or_create(
      cfg.model.checkpoint, cfg.model.get("pretrained") or None, arch=cfg.model.arch or None,
      default_arch=DEFAULT_ARCH, context_length=cfg.model.get("context_length") or None,
      dtype=compute_dtype(cfg.model.dtype),
      remat=cfg.model.remat and cfg.model.get("remat_policy", True), seed=cfg.seed,
      init_logit_bias=cfg.model.get("init_logit_bias"), warn_random=False,
      attention=cfg.model.get("attention", "auto"),
      scan_layers=cfg.model.get("scan_layers", False))
  if not cfg.model.checkpoint and cfg.model.get("init_logit_scale") is not None:
    clip = dict(clip, logit_scale=jnp.full((), cfg.model.init_logit_scale, jnp.float32))
  return model, {"clip": clip, **method.init_params(model, clip, cfg)}


def _caption_from(field: str, record: dict, index: int) -> dict:
  del index
  return dict(record, caption=record.get(field) or "")


def _dataset(cfg, method: Method, model, params, frozen, workdir):
  """The per-host iterator dataset, the epoch size and the frozen-tower cache (or None)."""

  def per_host(batch_size: int, name: str) -> int:
    if batch_size % jax.process_count():
      raise ValueError(f"{name} {batch_size} does not divide over {jax.process_count()} hosts")
    return batch_size // jax.process_count()

  context = model.cfg.text.context_length
  source = make_source(cfg.data.train)
  if cfg.data.caption_field != "caption":  # e.g. long captions (jina-style stages 2-3)
    source = MapRecords(source, functools.partial(_caption_from, cfg.data.caption_field))
  cache = None
  fields = dict(method.text_fields)
  image_stream = "image_text" if method.reads_text_pairs else ""
  if cfg.data.cache_frozen:  # validate() checked the method, augmentation and freeze rules
    images = frozen_cache.build_image_cache(model, params["clip"], source, cfg.data.train,
                                            workdir, num_workers=cfg.data.num_workers)
    text_frozen = all(is_frozen(f) for path, f in
                      jax.tree_util.tree_leaves_with_path(frozen["clip"])
                      if getattr(path[0], "key", None) != "visual")
    captions = None
    if method.caches_frozen_captions and text_frozen:
      spec = dict(cfg.data.train, caption_field=cfg.data.caption_field)
      captions = frozen_cache.build_caption_cache(model, params["clip"], source, spec, workdir)
      fields[image_stream] = tuple(f for f in fields[image_stream] if f != "caption")
    cache = frozen_cache.FrozenEmbeddings(images, captions)
    source = CachedInputs(source, images, captions=captions is not None)
  if "dialogue" in fields[image_stream] and method.own(cfg).dialogue_mode == "one_qa":
    source = OneQAPerSample(source)  # else "concat" (validate() checked the value)
  prepare = PrepareExample(model.cfg.vision.image_size, train=cfg.data.augment,
                           text_fields=fields[image_stream],
                           context_length=context, with_image=cache is None,
                           hf_tokenizer=model.cfg.text.tokenizer_dir,
                           tokenizer_clean=model.cfg.text.tokenizer_clean,
                           preprocess=model.cfg.image_preprocess.transform_kwargs(),
                           max_image_pixels=cfg.data.get("max_image_pixels",
                                                         DEFAULT_MAX_IMAGE_PIXELS))
  bad_window = min(cfg.data.get("bad_window", 1000) or len(source), len(source))
  images = build_dataset(source, prepare, batch_size=per_host(cfg.batch_size, "batch_size"),
                         seed=cfg.seed, num_workers=cfg.data.num_workers,
                         read_threads=_read_threads(cfg, cfg.data.train),
                         bad_window=bad_window)
  if not method.reads_text_pairs:
    return images, len(source), cache
  text_source = make_source(cfg.data.text)
  if cfg.data.text.kind == "synthetic":
    text_source = synthetic_text_records(text_source)
  texts = build_dataset(text_source, PrepareText(context, cfg.data.num_negatives,
                                                 model.cfg.text.tokenizer_dir,
                                                 model.cfg.text.tokenizer_clean),
                        batch_size=per_host(cfg.data.text_batch_size, "data.text_batch_size"),
                        seed=cfg.seed + 1, num_workers=cfg.data.num_workers,
                        read_threads=_read_threads(cfg, cfg.data.text),
                        bad_window=min(cfg.data.get("bad_window", 1000) or len(text_source),
                                       len(text_source)))
  return TwoStreams(texts, images), len(source), None


def _read_threads(cfg, spec) -> int | None:
  """data.read_threads; by default (-1) grain's choice, except for synthetic scenes read in
  the training process: drawing them holds the GIL, so reader threads only contend with each
  other and the step (a batch of 32: 29 ms with none, 41 ms with 16; docs/benchmarks.md)."""
  threads = cfg.data.get("read_threads", -1)
  if threads is None or threads < 0:
    return 0 if spec.kind == "synthetic" else None
  return threads


def trim_text_padding(batch: dict, fields: dict[str, Any], pad_id: int = 0) -> dict:
  """Drops padding columns of the token-id fields (exact, see `models.text.trim_padding`).
  `fields`: stream name ("" = the batch itself) -> token fields. The fields of a
  stream share one length, a bucket of `padded_length` (8, 16, 24, 32, 48, 64, 77 for a
  77-token context), agreed by every host (global arrays stay rectangular), so the step
  compiles for at most 7^streams shapes."""
  streams = [(s, [f for f in names if f in (batch[s] if s else batch)])
             for s, names in fields.items()]
  lengths = np.asarray([max(padded_length(x.reshape(-1, x.shape[-1]), pad_id=pad_id)
                            for x in ((batch[s] if s else batch)[f] for f in names))
                        for s, names in streams], np.int32)
  if jax.process_count() > 1:
    lengths = np.asarray(multihost_utils.process_allgather(lengths)).max(axis=0)
  out = {k: dict(v) if isinstance(v, dict) else v for k, v in batch.items()}
  for (s, names), n in zip(streams, lengths):
    target = out[s] if s else out
    for f in names:
      target[f] = target[f][..., :int(n)]
  return out


def train(cfg, workdir: str, devices: list[jax.Device] | None = None) -> dict:
  """Trains `cfg.method` to `cfg.total_steps` in `workdir` (resuming if it holds a checkpoint).

  devices: the devices of the mesh (default: every device of every host). A subset of one
  process's devices keeps others free in a notebook; on CPU, one device runs a small model
  faster than several simulated ones.
  Returns {"model", "params", "bad_records", "steps_run"}."""
  if "://" not in str(workdir):  # orbax needs absolute paths; gs:// etc. already are
    workdir = os.path.abspath(os.path.expanduser(workdir))
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if devices is not None and jax.process_count() > 1:
    raise ValueError("train(devices=...) is for one process; multi-host runs use every device")
  mesh = make_mesh(cfg.mesh.data, cfg.mesh.fsdp, devices)
  if cfg.batch_size % mesh.size:
    raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the {mesh.size} devices")
  method = get_method(cfg.method)
  model, params = _model_and_params(cfg, method)
  tx, frozen = make_optimizer(
      params, lr=cfg.optim.lr, total_steps=cfg.total_steps, warmup_steps=cfg.optim.warmup_steps,
      weight_decay=cfg.optim.weight_decay, b1=cfg.optim.b1, b2=cfg.optim.b2, eps=cfg.optim.eps,
      grad_clip_norm=cfg.optim.grad_clip_norm, freeze=tuple(cfg.freeze))
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
           "rng": jax.random.key_data(jax.random.key(cfg.seed))}
  sharding = state_shardings(state, tx, mesh, param_shardings(
      params, mesh, cfg.mesh.get("fsdp_rules", (".*",)), cfg.mesh.get("fsdp_min_size", 2**14)))
  state = jax.device_put(state, sharding)
  dataset, n_samples, cache = _dataset(cfg, method, model, params, frozen, workdir)
  iterator = iter(dataset)
  ckpt = Checkpointer(str(workdir / "checkpoints"), cfg.checkpoint.every, cfg.checkpoint.keep)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state, iterator)
    print(f"resumed from {workdir / 'checkpoints'} at step {int(state['step'])}", flush=True)
  start = int(state["step"])
  step_fn = make_train_step(method.objective(model, mesh, cfg), tx, frozen, mesh,
                            accum_steps=cfg.optim.accum_steps,
                            clamp_scale=not frozen["clip"]["logit_scale"],
                            state_sharding=sharding)
  bad = np.zeros(len(BAD_REASONS), np.int64)
  peak, peak_source = flops.peak_flops(mesh.devices.flat[0])
  trainable = flops.trainable_towers(frozen)
  if jax.process_index() == 0:  # the stage header, above its progress bar
    print(f"{cfg.method}: {n_samples} samples per epoch, global batch {cfg.batch_size}, steps "
          f"{start}..{cfg.total_steps}, mesh {dict(mesh.shape)}, work dir {workdir}; MFU "
          f"against {peak / 1e12:.3g} TFLOP/s per device ({peak_source})", flush=True)
  rewind_logs(workdir, start)  # what an interrupted run logged after its last checkpoint
  logs = MetricsLog(workdir, start, cfg.total_steps, cfg.batch_size, peak, mesh.size)
  bad_log = BadRecordLog(workdir)
  preempt = PreemptionFlag()
  last_saved = start if start else None
  try:
    for step in range(start, cfg.total_steps):
      batch = next(iterator)
      bad += batch.pop("bad_records")
      bad_log.add(step + 1, batch.pop("bad_examples", []))
      batch.pop("mask", None)
      if cache is not None:
        batch = cache.add_to(batch)
      if cfg.data.get("trim_text", True) and model.cfg.text.trimmable:
        batch = trim_text_padding(batch, method.text_fields,
                                  getattr(model.cfg.text, "pad_token_id", 0))
      logs.add_flops(jax.process_count() * flops.step_flops(model, batch, method.text_towers(),
                                                             trainable))
      state, metrics = step_fn(state, host_batch_to_global(batch, mesh))
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
        values.update({f"bad_records/{r}": float(n) for r, n in zip(BAD_REASONS, bad) if n})
        logs.write(done, values)
      if saving:
        ckpt.save(done, state, iterator)
        last_saved = done
      if preempted:
        ckpt.wait()
        logging.warning("%s: saved step %d in %s; rerun the same command to resume",
                        preempt.signal_name, done, workdir / "checkpoints")
        raise SystemExit(preempt.exit_code)
  finally:
    logs.close()
    bad_log.close()
    preempt.restore_handler()
    ckpt.close()
    if hasattr(iterator, "close"):
      iterator.close()
  if bad.any():
    counts = ", ".join(f"{r} {n}" for r, n in zip(BAD_REASONS, bad) if n)
    print(f"skipped {int(bad.sum())} records ({counts}); each one is named in "
          f"{bad_log.path}", file=sys.stderr, flush=True)
  # Every host gets the full parameters (FSDP shards live on several hosts' devices).
  params = jax.tree.map(np.asarray, multihost_utils.process_allgather(state["params"], tiled=True))
  return {"model": model, "params": params, "bad_records": bad,
          "steps_run": cfg.total_steps - start}
