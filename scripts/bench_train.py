r"""Training-step throughput, one run each:

  python scripts/bench_train.py                       # DRAFT: clipjax vs open_clip, ViT-B-32
  python scripts/bench_train.py --lora=8              # CLIP: LoRA rank 8 vs full fine-tuning
  python scripts/bench_train.py --patch_dropout=0.5 --arch=ViT-B-16   # CLIP: FLIP vs none

--lora / --patch_dropout time clipjax's CLIP step (both towers, AdamW, the CLIP loss, random
weights and pixels, synthetic captions with their padding cut) in two settings and print the
ratio: LoRA also prints the trained parameters and optimizer-state bytes of each (the
adapters on the attention and MLP kernels, the CLIP weights frozen); patch dropout prints the
image tower's share of the forward FLOPs (the target on a ViT-B-16: >= 1.6x at 0.5; FLIP
reports ~2x when the image tower dominates).

The default (DRAFT):

Both sides: frozen image tower (forward only), text tower encoding the captions and the
dialogue texts, DRAFT loss = a·CE(s·Z Iᵀ) + (1−a)·CE(s·Y Iᵀ) (texts as queries) + the RFF
MMD (R = 64, σ = std of the similarities, no gradient through σ), AdamW on the text tower.
Random weights (identical), random pixels; texts are the synthetic scenes' captions and
question–answer pairs (10-25 tokens, as real captions). open_clip always runs the 77-token
context; clipjax's loop cuts the padding columns (exact under the causal mask) unless
--notrim. Prints samples/s and the ratio, and clipjax's model TFLOP/s and MFU (model FLOPs
of the step from the shapes, clipjax/train/flops.py, against the device's peak: the data
sheet for TPUs / GPUs, a timed float32 matmul on CPUs).
"""
import math
import time

from absl import flags

from clipjax import cli

flags.DEFINE_string("arch", "ViT-B-32", "Architecture.")
flags.DEFINE_integer("batch", 32, "Global batch size.")
flags.DEFINE_integer("steps", 8, "Timed steps (after 2 warm-up steps).")
flags.DEFINE_bool("trim", True, "clipjax: cut padding columns as the training loop does.")
flags.DEFINE_integer("lora", 0, "> 0: LoRA of this rank against full fine-tuning (CLIP step).")
flags.DEFINE_float("patch_dropout", 0.0, "> 0: this patch dropout against none (CLIP step).")
FLAGS = flags.FLAGS


def torch_step_fn(model, a=0.65, features=64):
  import torch
  import torch.nn.functional as F
  for p in model.visual.parameters():
    p.requires_grad_(False)
  model.logit_scale.requires_grad_(False)
  trainable = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)

  def step(images, captions, dialogues):
    with torch.no_grad():
      img = F.normalize(model.encode_image(images), dim=-1)
    cap = F.normalize(model.encode_text(captions), dim=-1)
    dia = F.normalize(model.encode_text(dialogues), dim=-1)
    s = model.logit_scale.exp()
    target = torch.arange(len(img))
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
    return loss

  return step


def clip_step_rate(model, params, batch, *, freeze=(), lora_rank=0):
  """(samples/s of clipjax's CLIP step, the optimizer's frozen mask, its state in bytes)."""
  import jax
  import numpy as np

  from clipjax.methods import get_method, method_config
  from clipjax.parallel.mesh import host_batch_to_global, make_mesh
  from clipjax.train.optim import make_optimizer
  from clipjax.train.step import make_train_step
  cfg, mesh = method_config("clip"), make_mesh()
  cfg.lora.rank, cfg.lora.alpha = lora_rank, 2.0 * max(lora_rank, 1)
  tx, frozen = make_optimizer(params, lr=1e-5, total_steps=100, freeze=freeze)
  step = make_train_step(get_method("clip").objective(model, mesh, cfg), tx, frozen, mesh,
                         clamp_scale=True)
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

  import clipjax
  from clipjax.data.synthetic import SyntheticScenes
  from clipjax.errors import ConfigError
  from clipjax.models.lora import init_lora
  from clipjax.train import flops
  from clipjax.train.loop import trim_text_padding
  from clipjax.train.optim import is_frozen
  if FLAGS.lora < 0 or not 0 <= FLAGS.patch_dropout < 1:
    raise ConfigError(f"--lora={FLAGS.lora} must be >= 0 and --patch_dropout="
                      f"{FLAGS.patch_dropout} in [0, 1)")
  model, clip = clipjax.create_model(FLAGS.arch)
  if FLAGS.patch_dropout and getattr(model.cfg.vision, "is_resnet", False):
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


def main(argv):
  del argv
  if FLAGS.lora or FLAGS.patch_dropout:
    return compare_clip_steps()
  import jax
  import numpy as np
  import open_clip
  import torch

  import clipjax
  from clipjax.convert.openclip import state_dict_to_params
  from clipjax.methods import get_method, method_config
  from clipjax.parallel.mesh import make_mesh
  from clipjax.train import flops
  from clipjax.train.optim import make_optimizer
  from clipjax.train.step import make_train_step

  torch.manual_seed(0)
  ref = open_clip.create_model(FLAGS.arch, pretrained=None)
  model, _ = clipjax.create_model(FLAGS.arch)
  sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
  params = {"clip": state_dict_to_params(sd, model.cfg)}
  size, n = model.cfg.vision.image_size, FLAGS.batch
  rng = np.random.default_rng(0)
  pixels = rng.normal(size=(n, size, size, 3)).astype(np.float32)
  from clipjax.data.records import format_qa
  from clipjax.data.synthetic import SyntheticScenes
  from clipjax.text.tokenizer import Tokenizer
  from clipjax.train.loop import trim_text_padding
  scenes = [SyntheticScenes(n, resolution=32)[i] for i in range(n)]
  tok = Tokenizer()
  ids = np.stack([tok([s["caption"] for s in scenes]),
                  tok([format_qa(*s["dialogue"][i % 3]) for i, s in enumerate(scenes)])])

  cfg = method_config("draft")
  mesh = make_mesh()
  method = get_method("draft")
  tx, frozen = make_optimizer(params, lr=1e-5, total_steps=100,
                              freeze=("^clip/visual/", "^clip/logit_scale$"))
  step = make_train_step(method.objective(model, mesh, cfg), tx, frozen, mesh, clamp_scale=False)
  state = {"params": params, "opt_state": tx.init(params), "step": np.int32(0),
           "rng": jax.random.key_data(jax.random.key(0))}
  batch = {"image": pixels, "caption": ids[0], "dialogue": ids[1],
           "image_id": np.arange(n), "label": np.zeros(n, np.int64)}
  if FLAGS.trim:
    batch = trim_text_padding(batch, method.text_fields, method.text_pair_fields)

  def ours():
    nonlocal state
    state, metrics = step(state, batch)
    return metrics["loss"].block_until_ready()

  torch_step = torch_step_fn(ref)
  t_args = (torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(ids[0]).long(), torch.from_numpy(ids[1]).long())

  def timed(fn):
    for _ in range(2):
      fn()
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      fn()
    return FLAGS.steps * n / (time.perf_counter() - start)

  ref_rate = timed(lambda: torch_step(*t_args))
  our_rate = timed(ours)
  print(f"DRAFT step, {FLAGS.arch}, batch {n}, float32, CPU ({torch.get_num_threads()} torch "
        f"threads), frozen image tower, AdamW on the text tower; clipjax text length "
        f"{batch['caption'].shape[1]}/{batch['dialogue'].shape[1]} of 77")
  print(f"  open_clip/PyTorch: {ref_rate:7.2f} samples/s")
  print(f"  clipjax:           {our_rate:7.2f} samples/s   ratio {our_rate / ref_rate:.2f}x")
  step_flops = flops.step_flops(model, batch, method.text_towers(), flops.trainable_towers(frozen))
  peak, source = flops.peak_flops()
  achieved = step_flops * our_rate / n
  print(f"  clipjax model FLOPs {step_flops / 1e9:.1f} G/step: {achieved / 1e12:.3f} TFLOP/s, "
        f"MFU {achieved / (peak * mesh.size):.1%} of {mesh.size} x {peak / 1e12:.3g} TFLOP/s "
        f"({source})")


if __name__ == "__main__":
  cli.run(main)
