r"""Training-step throughput, one run each:

  python scripts/bench_train.py                       # DRAFT: clipjax vs open_clip, ViT-B-32
  python scripts/bench_train.py --method=clip         # CLIP (both towers) vs open_clip
  python scripts/bench_train.py --method=lit          # LiT (locked image tower) vs open_clip
  python scripts/bench_train.py --lora=8              # CLIP: LoRA rank 8 vs full fine-tuning
  python scripts/bench_train.py --patch_dropout=0.5 --arch=ViT-B-16   # CLIP: FLIP vs none

--method (default draft) times one training step in PyTorch (open_clip's model, the same
work written in torch) and in clipjax twice: at the full 77-token context, the same work as
open_clip, and with the padding columns cut as clipjax's loop does (exact under the causal
mask). Both sides: the same random weights and pixels; texts are fixed and real
(scripts/bench_inputs.py: the COCO sample's captions and one VisDial-style dialogue turn per
photo), and their token lengths are printed. DRAFT: frozen image tower (forward only), the
text tower on captions and dialogue turns, a·CE(s·Z Iᵀ) + (1−a)·CE(s·Y Iᵀ) + the RFF MMD
(R = 64, σ = std of the similarities); CLIP: both towers and the scale; LiT: the text tower
and the scale. AdamW (open_clip's defaults). Prints samples/s, the ratios, and clipjax's MFU
(model FLOPs of the step from the shapes, clipjax/train/flops.py, over the device's peak: the
data sheet for TPUs / GPUs, a timed float32 matmul on CPUs).

--lora / --patch_dropout time clipjax's CLIP step (both towers, AdamW, the CLIP loss, random
weights and pixels, COCO captions with their padding cut) in two settings and print the
ratio: LoRA also prints the trained parameters and optimizer-state bytes of each (the
adapters on the attention and MLP kernels, the CLIP weights frozen); patch dropout prints the
image tower's share of the forward FLOPs (the target on a ViT-B-16: >= 1.6x at 0.5; FLIP
reports ~2x when the image tower dominates).
"""
import math
import resource
import time

from absl import flags

from clipjax import cli

flags.DEFINE_string("arch", "ViT-B-32", "Architecture.")
flags.DEFINE_integer("batch", 32, "Global batch size.")
flags.DEFINE_integer("steps", 5, "Timed steps (after 2 warm-up steps).")
flags.DEFINE_enum("method", "draft", ["draft", "clip", "lit"],
                  "The step compared with open_clip: DRAFT, CLIP or LiT.")
flags.DEFINE_integer("lora", 0, "> 0: LoRA of this rank against full fine-tuning (CLIP step).")
flags.DEFINE_float("patch_dropout", 0.0, "> 0: this patch dropout against none (CLIP step).")
FLAGS = flags.FLAGS


def torch_step_fn(model, method: str, a=0.65, features=64):
  """open_clip's model trained by `method` in PyTorch, the same work as clipjax's step:
  draft (frozen image tower and scale, captions + dialogue turns, RFF MMD), clip (both towers
  and the scale train) or lit (locked image tower); AdamW as open_clip's training defaults."""
  import torch
  import torch.nn.functional as F
  if method in ("draft", "lit"):
    for p in model.visual.parameters():
      p.requires_grad_(False)
  if method == "draft":
    model.logit_scale.requires_grad_(False)
  trainable = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)

  def step(images, captions, dialogues=None):
    with torch.set_grad_enabled(method == "clip"):
      img = F.normalize(model.encode_image(images), dim=-1)
    cap = F.normalize(model.encode_text(captions), dim=-1)
    s = model.logit_scale.exp()
    target = torch.arange(len(img))
    if method != "draft":
      logits = s * img @ cap.T
      loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    else:
      dia = F.normalize(model.encode_text(dialogues), dim=-1)
      S, D = s * cap @ img.T, s * dia @ img.T
      loss = a * F.cross_entropy(D, target) + (1 - a) * F.cross_entropy(S, target)
      sigma = torch.cat([S.flatten(), D.flatten()]).std().detach()
      omega = torch.randn(features) / sigma
      b = torch.rand(features) * 2 * math.pi
      phi = lambda u: math.sqrt(2 / features) * torch.cos(u.flatten()[:, None] * omega + b)
      mmd2 = ((phi(S).mean(0) - phi(D).mean(0)) ** 2).sum()
      loss = loss + torch.sqrt(torch.clamp(mmd2, min=0) + 1e-12)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if method != "draft":
      with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss

  return step


def clip_step_rate(model, params, batch, *, freeze=(), lora_rank=0):
  """(samples/s of clipjax's CLIP step, the optimizer's frozen mask, its state in bytes)."""
  import jax
  import numpy as np

  from clipjax.methods import get_method, method_config, run_options
  from clipjax.parallel.mesh import host_batch_to_global, make_mesh
  from clipjax.train.optim import make_optimizer
  from clipjax.options import OptimOptions
  from clipjax.train.step import make_train_step
  cfg, mesh = method_config("clip"), make_mesh()
  cfg.lora.rank, cfg.lora.alpha = lora_rank, 2.0 * max(lora_rank, 1)
  optim = OptimOptions(lr=1e-5, warmup_steps=0, grad_clip_norm=0.0)
  tx, frozen = make_optimizer(params, optim, 100, freeze)
  objective = get_method("clip").objective(model, mesh, run_options(cfg))
  step = make_train_step(objective, tx, frozen, mesh, clamp_scale=True)
  opt_state = tx.init(params)
  opt_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(opt_state))
  state = {"params": params, "opt_state": opt_state, "step": np.int32(0),
           "rng": jax.random.key_data(jax.random.key(0))}
  global_batch = host_batch_to_global(batch, mesh)
  for i in range(2 + FLAGS.steps):
    if i == 2:
      start = time.perf_counter()
    state, metrics = step(state, global_batch)
    metrics["loss"].block_until_ready()
  return FLAGS.steps * FLAGS.batch / (time.perf_counter() - start), frozen, opt_bytes


def compare_clip_steps():
  """--lora / --patch_dropout: two settings of clipjax's CLIP step, side by side."""
  import jax
  import numpy as np

  from bench_inputs import coco_captions

  import clipjax
  from clipjax.errors import ConfigError
  from clipjax.models.lora import init_lora
  from clipjax.train import flops
  from clipjax.train.loop import trim_text_padding
  from clipjax.train.optim import is_frozen
  if FLAGS.lora < 0 or not 0 <= FLAGS.patch_dropout < 1:
    raise ConfigError(f"--lora={FLAGS.lora} must be >= 0 and --patch_dropout="
                      f"{FLAGS.patch_dropout} in [0, 1)")
  if FLAGS.patch_dropout and getattr(clipjax.get_model_config(FLAGS.arch).vision, "is_resnet",
                                     False):  # refused before the model is built
    raise ConfigError(f"--arch={FLAGS.arch} has a ResNet image tower; patch dropout needs a "
                      f"ViT or SigLIP tower (e.g. --arch=ViT-B-16)")
  model, clip = clipjax.create_model(FLAGS.arch)
  n, size = FLAGS.batch, model.cfg.vision.image_size
  batch = {"image": np.random.default_rng(0).integers(0, 255, (n, size, size, 3), np.uint8),
           "caption": np.asarray(clipjax.get_tokenizer(FLAGS.arch)(
               coco_captions(n))),
           "image_id": np.arange(n)}
  if model.cfg.text.trimmable:
    batch = trim_text_padding(batch, ("caption",))
  fresh = lambda: {"clip": jax.tree.map(np.array, clip)}  # the step donates its state
  print(f"CLIP training step, {FLAGS.arch}, batch {n}, {jax.default_backend()}, both towers")
  if FLAGS.lora:
    rows = {}
    for label, rank in (("full fine-tuning", 0), (f"LoRA rank {FLAGS.lora}", FLAGS.lora)):
      params = fresh()
      if rank:
        params["lora"] = init_lora(params, rank)
      rate, frozen, opt_bytes = clip_step_rate(model, params, batch, lora_rank=rank,
                                               freeze=("^clip/",) if rank else ())
      trained = sum(x.size for x, f in zip(jax.tree.leaves(params), jax.tree.leaves(frozen))
                    if not is_frozen(f))
      rows[label] = rate
      print(f"  {label:18s} {rate:8.2f} samples/s  {trained / 1e6:9.3f} M trained parameters  "
            f"optimizer state {opt_bytes / 2**20:9.1f} MiB")
    full, lora = rows.values()
    print(f"  ratio (LoRA / full): {lora / full:.2f}x")
    return
  rates, step_flops = {}, {}
  for rate in (0.0, FLAGS.patch_dropout):
    m = model.clone(patch_dropout=rate)
    rates[rate], frozen, _ = clip_step_rate(m, fresh(), batch)
    step_flops[rate] = flops.step_flops(m, batch, {"caption": "text"},
                                        flops.trainable_towers(frozen))
  image = flops.tower_forward_flops(model, "image")
  text = flops.tower_forward_flops(model, "text", batch["caption"].shape[1])
  print(f"  the image tower is {image / (image + text):.0%} of the forward FLOPs")
  for rate in rates:
    print(f"  patch_dropout {rate:<5g} {rates[rate]:8.2f} samples/s  "
          f"({step_flops[rate] / 1e9:.1f} GFLOP/step)")
  print(f"  ratio: {rates[FLAGS.patch_dropout] / rates[0.0]:.2f}x")


def _timed(fn) -> tuple[float, float]:
  """(samples/s, minor page faults per step) of `fn` (one step) over --steps steps after two
  warm-up steps. The faults count memory the step maps afresh: XLA:CPU allocates each run's
  temporaries anew, PyTorch's allocator reuses freed blocks."""
  for _ in range(2):
    fn()
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    fn()
  seconds = time.perf_counter() - start
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
  return FLAGS.steps * FLAGS.batch / seconds, faults / FLAGS.steps


def compare_with_open_clip():
  """--method's step in clipjax, at the full context (open_clip's work) and with the padding
  columns trimmed (the loop's default), against the same step in PyTorch, one run."""
  import jax
  import numpy as np
  import torch
  from bench_inputs import coco_captions, coco_dialogue_turns, openclip_model, token_lengths

  import clipjax
  from clipjax.convert.openclip import state_dict_to_params
  from clipjax.methods import get_method, method_config, run_options
  from clipjax.parallel.mesh import make_mesh
  from clipjax.train import flops
  from clipjax.train.loop import trim_text_padding
  from clipjax.train.optim import make_optimizer
  from clipjax.options import OptimOptions
  from clipjax.train.step import make_train_step

  torch.manual_seed(0)
  name, n = FLAGS.method, FLAGS.batch
  ref = openclip_model(FLAGS.arch)
  model, _ = clipjax.create_model(FLAGS.arch)
  sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
  size = model.cfg.vision.image_size
  pixels = np.random.default_rng(0).normal(size=(n, size, size, 3)).astype(np.float32)
  tokenizer = clipjax.get_tokenizer(FLAGS.arch)
  batch = {"image": pixels, "caption": np.asarray(tokenizer(coco_captions(n))),
           "image_id": np.arange(n), "label": np.zeros(n, np.int64)}
  if name == "draft":
    batch["dialogue"] = np.asarray(tokenizer(coco_dialogue_turns(n)))
  texts = [f for f in ("caption", "dialogue") if f in batch]

  cfg, mesh, method = method_config(name), make_mesh(), get_method(name)
  trimmed = trim_text_padding(batch, method.text_fields, method.text_pair_fields)

  def our_rate(batch):
    params = {"clip": state_dict_to_params(sd, model.cfg)}
    optim = OptimOptions(lr=1e-5, warmup_steps=0, grad_clip_norm=0.0)
    tx, frozen = make_optimizer(params, optim, 100, tuple(cfg.freeze))
    step = make_train_step(method.objective(model, mesh, run_options(cfg)), tx, frozen, mesh,
                           clamp_scale=name != "draft")
    state = {"params": params, "opt_state": tx.init(params), "step": np.int32(0),
             "rng": jax.random.key_data(jax.random.key(0))}

    def one():
      nonlocal state
      state, metrics = step(state, batch)
      metrics["loss"].block_until_ready()
    rate, faults = _timed(one)
    step_flops = flops.step_flops(model, batch, method.text_towers(),
                                  flops.trainable_towers(frozen))
    return rate, step_flops, faults

  torch_step = torch_step_fn(ref, name)
  t_args = [torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()]
  t_args += [torch.from_numpy(batch[f]).long() for f in texts]
  ref_rate, ref_faults = _timed(lambda: torch_step(*t_args))
  full_rate, full_flops, full_faults = our_rate(batch)
  trim_rate, trim_flops, trim_faults = our_rate(trimmed)
  peak, source = flops.peak_flops()
  context = batch["caption"].shape[1]
  print(f"{name} step, {FLAGS.arch}, batch {n}, float32, {jax.default_backend()} "
        f"({torch.get_num_threads()} torch threads), AdamW; texts: COCO captions"
        + (" + one dialogue turn each" if name == "draft" else ""))
  for f in texts:
    print(f"  {f} tokens: {token_lengths(batch[f])}; trimmed to {trimmed[f].shape[1]}")
  print(f"  {'':34s} {'text length':>11s} {'samples/s':>9s} {'ratio':>7s} {'MFU':>6s} "
        f"{'page faults/step':>16s}")
  print(f"  {'open_clip / PyTorch':34s} {context:11d} {ref_rate:9.2f} {'':7s} {'':6s} "
        f"{ref_faults:16,.0f}")
  for label, rate, step_flops, length, faults in (
      ("clipjax, equal work (full context)", full_rate, full_flops, context, full_faults),
      ("clipjax, padding trimmed (default)", trim_rate, trim_flops, trimmed["caption"].shape[1],
       trim_faults)):
    mfu = step_flops * rate / n / (peak * mesh.size)
    print(f"  {label:34s} {length:11d} {rate:9.2f} {rate / ref_rate:6.2f}x {mfu:6.1%} "
          f"{faults:16,.0f}")
  print(f"  MFU: model FLOPs from the shapes ({full_flops / 1e9:.1f} G/step at full context) "
        f"over {mesh.size} x {peak / 1e12:.3g} TFLOP/s ({source})")


def main(argv):
  del argv
  if FLAGS.lora or FLAGS.patch_dropout:
    return compare_clip_steps()
  return compare_with_open_clip()


if __name__ == "__main__":
  cli.run(main)
