"""optim.ema_decay: the weight average against timm's ModelEmaV3 (open_clip's trainer uses it),
continued bitwise by a resumed run, evaluated and exported beside the trained weights."""
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from clipjax.main import run
from clipjax.methods import method_config
from clipjax.train.ema import ema_decay, init_ema, update_ema


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_equals_timm_model_ema_v3(warmup):
  """The same sequence of weights averaged by timm and by us: float32 weights of size ~1,
  where timm's lerp and our multiply-add round differently by a few float32 ulps of the
  inputs (atol 1e-6, rtol 1e-6)."""
  from timm.utils.model_ema import ModelEmaV3
  torch.manual_seed(0)
  model = torch.nn.Linear(8, 4)
  ref = ModelEmaV3(model, decay=0.99, use_warmup=warmup)
  params = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  frozen = {k: False for k in params}
  ema = init_ema(params, frozen)
  rng = np.random.default_rng(0)
  for n in range(1, 12):
    assert float(ema_decay(n, 0.99, warmup)) == pytest.approx(ref.get_decay(n), rel=1e-6, abs=0)
    with torch.no_grad():
      for v in model.parameters():
        v.copy_(torch.from_numpy(rng.normal(size=tuple(v.shape)).astype(np.float32)))
    ref.update(model, step=n)
    params = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    ema = update_ema(ema, params, frozen, n, 0.99, warmup)
    for k, v in ref.module.state_dict().items():
      np.testing.assert_allclose(np.asarray(ema[k]), v.numpy(), rtol=1e-6, atol=1e-6)


def _config(steps: int, tasks: str = ""):
  c = method_config("clip")
  c.model.arch = "ViT-T-16-test"
  c.data.train = dict(kind="synthetic", size=256, resolution=32, seed=0, split="train")
  c.data.num_workers = 0
  c.batch_size, c.total_steps, c.log_every = 32, steps, 3
  c.optim.warmup_steps, c.optim.ema_decay, c.optim.ema_warmup = 2, 0.9, True
  c.checkpoint.every = 3
  c.export.hf = False
  c.eval.tasks, c.eval.num_workers = tasks, 0
  c.eval.retrieval.source = dict(kind="synthetic", size=64, resolution=32, seed=0, split="eval")
  return c


def test_ema_is_resumed_bitwise_evaluated_and_exported(tmp_path):
  results = run(_config(6, "retrieval"), str(tmp_path / "one"))
  assert set(results["retrieval"]) == {"clip", "clip_ema"}  # the average beside the weights
  run(_config(3), str(tmp_path / "two"))
  run(_config(6), str(tmp_path / "two"))  # resumes at step 3
  one, two = (load_file(str(tmp_path / d / "export" / "ema" / "open_clip_model.safetensors"))
              for d in ("one", "two"))
  raw = load_file(str(tmp_path / "one" / "export" / "open_clip_model.safetensors"))
  assert one.keys() == two.keys() == raw.keys()
  for k in one:
    np.testing.assert_array_equal(one[k], two[k], err_msg=k)
  assert any(not np.array_equal(one[k], raw[k]) for k in raw)  # an average, not a copy


def test_ema_decay_out_of_range_is_a_config_error():
  from clipjax.errors import ConfigError
  from clipjax.train.validate import validate
  cfg = _config(3)
  cfg.optim.ema_decay = 1.0
  with pytest.raises(ConfigError, match=r"optim.ema_decay=1.0 must be in \[0, 1\)"):
    validate(cfg)
