"""Step-for-step parity with open_clip's trainer: the same tiny CLIP, from the same weights,
on the same 30 batches, trained by `open_clip_train.train.train_one_epoch` (AdamW with
open_clip_train's parameter groups, warm-up + cosine, clipping by global norm, the logit-scale
clamp) and by clipjax from `configs/clip.py` set the same way. float32 on CPU on both sides:
the losses agree to 1e-4 relative at every step (observed 2e-7), and with an EMA (timm's
ModelEmaV3 on the torch side) so do the averaged weights (observed within 6e-6). The average
never feeds back into training, so the run with it also gives the losses without it."""
import types

import jax
import numpy as np
import torch
from conftest import make_openclip_model
from safetensors.numpy import save_file

from clipjax.data.synthetic import SyntheticScenes
from clipjax.parallel.mesh import host_batch_to_global
from clipjax.pixels import OPENAI_MEAN, OPENAI_STD
from clipjax.text.tokenizer import Tokenizer

STEPS, BATCH, LR, WARMUP, CLIP_NORM, EMA = 30, 8, 1e-3, 5, 1.0, 0.9


def _batches():
  rng = np.random.default_rng(0)
  scenes = SyntheticScenes(STEPS * BATCH, resolution=32)
  ids = Tokenizer()([scenes[i]["caption"] for i in range(STEPS * BATCH)])
  images = rng.integers(0, 256, (STEPS * BATCH, 32, 32, 3), np.uint8)
  return [(images[s:s + BATCH], ids[s:s + BATCH]) for s in range(0, STEPS * BATCH, BATCH)]


def _open_clip_train(model, batches):
  """Losses of train_one_epoch at every step, and the EMA's state dict."""
  from open_clip.loss import ClipLoss
  from open_clip_train.scheduler import cosine_lr
  from open_clip_train.train import train_one_epoch
  from timm.utils.model_ema import ModelEmaV3

  # open_clip_train/main.py's parameter groups (no decay: ndim < 2, bn, ln, bias, logit_scale)
  exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
  named = list(model.named_parameters())
  optimizer = torch.optim.AdamW(
      [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
       {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": 0.2}],
      lr=LR, betas=(0.9, 0.98), eps=1e-6)
  scheduler = cosine_lr(optimizer, LR, WARMUP, STEPS)
  averaged = ModelEmaV3(model, decay=EMA, use_warmup=True)
  losses = []

  class Recorded(ClipLoss):
    def forward(self, *args, **kw):
      out = super().forward(*args, **kw)
      losses.append(float(sum(v.detach() for v in out.values())))
      if len(losses) > 1:  # after the previous optimizer step
        averaged.update(model, step=len(losses) - 1)
      return out

  mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
  loader = [((torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - mean) / std,
             torch.from_numpy(y).long()) for x, y in batches]
  data = {"train": types.SimpleNamespace(set_epoch=lambda epoch: None, dataloader=_Loader(loader))}
  args = types.SimpleNamespace(
      device="cpu", precision="fp32", distill=False, accum_freq=1, skip_scheduler=False,
      grad_clip_norm=CLIP_NORM, horovod=False, log_every_n_steps=1000, batch_size=BATCH,
      world_size=1, rank=0, local_rank=0, wandb=False)
  train_one_epoch(model, data, Recorded(), 0, optimizer, None, scheduler, None, args)
  averaged.update(model, step=STEPS)
  return losses, {k: v.detach().numpy() for k, v in averaged.module.state_dict().items()}


class _Loader(list):
  """What train_one_epoch reads of open_clip_train's DataInfo.dataloader."""
  num_batches, num_samples = STEPS, STEPS * BATCH


def _clipjax(checkpoint: str, batches):
  from method_runs import config_file

  from clipjax.convert.openclip import params_to_state_dict
  from clipjax.methods import run_options
  from clipjax.train.ema import ema_params
  from clipjax.train.loop import _setup
  from clipjax.train.step import make_train_step
  cfg = config_file("clip", "arch=ViT-T-16-test")
  cfg.model.checkpoint = checkpoint
  cfg.total_steps, cfg.batch_size = STEPS, BATCH
  cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.grad_clip_norm = LR, WARMUP, CLIP_NORM
  cfg.optim.ema_decay, cfg.optim.ema_warmup = EMA, True
  opts = run_options(cfg)
  run = _setup(opts, jax.devices()[:1])
  step = make_train_step(run.method.objective(run.model, run.mesh, opts), run.tx, run.frozen,
                         run.mesh, clamp_scale=True, state_sharding=run.sharding,
                         ema_decay=cfg.optim.ema_decay, ema_warmup=True)
  state, losses = run.state, []
  for images, ids in batches:
    batch = {"image": images, "caption": ids, "image_id": np.arange(BATCH)}
    state, metrics = step(state, host_batch_to_global(batch, run.mesh))
    losses.append(float(metrics["loss"]))
  params = jax.tree.map(np.asarray, state["params"])
  return losses, params_to_state_dict(
      ema_params(jax.tree.map(np.asarray, state["ema"]), params, run.frozen)["clip"])


def test_thirty_steps_equal_open_clip_train(tmp_path):
  model = make_openclip_model("ViT-T-16-test")
  model.output_dict = True  # as open_clip_train creates its model
  path = str(tmp_path / "init.safetensors")
  save_file({k: v.detach().numpy().copy() for k, v in model.state_dict().items()}, path)
  batches = _batches()
  theirs, their_ema = _open_clip_train(model, batches)
  ours, our_ema = _clipjax(path, batches)
  assert len(theirs) == len(ours) == STEPS
  np.testing.assert_allclose(ours, theirs, rtol=1e-4)
  assert theirs[-1] < theirs[0]  # it trained
  for k, v in their_ema.items():
    np.testing.assert_allclose(our_ema[k], v, rtol=1e-3, atol=1e-5, err_msg=k)
