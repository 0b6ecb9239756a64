"""The batch plan: one division of the global batch over hosts, devices and GradCache chunks
(and a NaFlex tower's rows per sequence length), read by validation, the loop and the data
streams; each field that does not divide or fit is a ConfigError naming it."""
import pytest

from clipjax.data.batch_plan import batch_plan
from clipjax.data.batching import plan_lengths
from clipjax.errors import ConfigError
from clipjax.options import DataOptions, NaflexOptions, OptimOptions, RunOptions


def _cfg(batch_size=64, accum=1, text_batch=None, naflex=None, seed=0):
  return RunOptions("clip", batch_size=batch_size, seed=seed,
                    optim=OptimOptions(accum_steps=accum),
                    data=DataOptions(text_batch_size=text_batch,
                                     naflex=NaflexOptions(**(naflex or {}))))


def test_the_division_of_a_plain_batch():
  plan = batch_plan(_cfg(64, accum=2, text_batch=32), devices=8, hosts=2)
  assert (plan.per_host, plan.per_device, plan.text_per_host) == (32, 8, 16)
  assert plan.lengths is None and plan.describe() == "64"
  assert batch_plan(_cfg(64), devices=8, hosts=1).text_per_host is None


def test_naflex_rows_per_length_follow_the_mesh_the_run_uses():
  """The token budget defaults to the per-device batch at the longest length; rows are this
  host's (devices per host x rows per device), a multiple of the GradCache sub-batches."""
  cfg = _cfg(64, accum=2, naflex=dict(lengths=(64, 256), token_budget=0), seed=3)
  plan = batch_plan(cfg, devices=8, hosts=2, naflex_patches=256)
  assert plan.lengths == plan_lengths((64, 256), 8 * 256, 4, seed=3, multiple=2)
  assert plan.lengths.rows == (4 * 32, 4 * 8)
  assert plan.describe() == "NaFlex 256 x 64 patches, 64 x 256 patches"
  # a subset of the devices (train(devices=...)): the budget follows its per-device batch
  subset = batch_plan(cfg, devices=2, hosts=1, naflex_patches=256)
  assert subset.lengths.rows == (2 * 128, 2 * 32)
  # the tower's own length when data.naflex names none
  assert batch_plan(_cfg(8), devices=1, hosts=1, naflex_patches=256).lengths.lengths == (256,)


@pytest.mark.parametrize("cfg, devices, hosts, naflex, message", [
    (_cfg(60), 8, 1, None, "batch_size=60 must be a positive multiple of the 8 devices"),
    (_cfg(64, text_batch=30), 4, 2, None, "data.text_batch_size=30 must be a positive multiple"),
    (_cfg(64, accum=3), 8, 1, None, "optim.accum_steps=3 must divide the per-device batch 8"),
    (_cfg(64, naflex=dict(lengths=(64,))), 8, 1, None, "data.naflex is for SigLIP 2 NaFlex"),
    (_cfg(64, naflex=dict(lengths=(0, 64))), 8, 1, 256, "data.naflex.lengths=[0, 64] must be"),
    (_cfg(64, naflex=dict(token_budget=-1)), 8, 1, 256, "data.naflex.token_budget=-1 must be"),
    (_cfg(64, naflex=dict(lengths=(64, 1024), token_budget=512)), 8, 1, 256,
     "holds no batch at length 1024"),
])
def test_what_does_not_divide_or_fit_is_named(cfg, devices, hosts, naflex, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
    batch_plan(cfg, devices=devices, hosts=hosts, naflex_patches=naflex)
