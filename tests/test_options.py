"""A run's typed options: the ConfigDict every config file edits is written from the dataclass
defaults, read back field for field, older configs missing a field get its default, method and
task blocks get their settings under the config's values, and nothing can be changed after."""
import dataclasses

import ml_collections
import pytest

from clipjax.config import base_config
from clipjax.errors import ConfigError
from clipjax.methods import get_method, method_config, method_names, run_options
from clipjax.options import BLOCKS, ModelOptions, OptimOptions, RunOptions
from clipjax.train.validate import validate


def test_base_config_is_written_from_the_option_defaults():
  """Every block of a fresh config reads back as its dataclass with no field changed, and the
  config lists every non-optional field (what --help shows)."""
  cfg = base_config("clip")
  opts = run_options(cfg)
  for name, kind in BLOCKS.items():
    assert getattr(opts, name) == kind(), name
    listed = set(cfg[name].keys())
    fields = {f.name for f in dataclasses.fields(kind) if not f.metadata.get("optional")}
    assert listed == fields, name
  top = RunOptions("clip")
  assert (opts.seed, opts.batch_size, opts.total_steps, opts.log_every, opts.freeze) == (
      top.seed, top.batch_size, top.total_steps, top.log_every, top.freeze)


@pytest.mark.parametrize("method", method_names())
def test_each_methods_config_reads_back(method):
  """The values a method's config sets are the options' (freeze rules as a tuple, its block
  under `settings`, its base run with the model fields it inherits)."""
  cfg = method_config(method)
  opts = run_options(cfg)
  assert opts.method == method and opts.freeze == tuple(cfg.freeze)
  assert opts.optim.lr == cfg.optim.lr and opts.data.train == cfg.data.train.to_dict()
  for key, value in get_method(method).settings.items():
    got = opts.settings[key]
    assert (got.to_dict() if hasattr(got, "to_dict") else got) == value, key
  if cfg.base is not None:
    assert opts.base.method == cfg.base.method and opts.base.model.arch == cfg.model.arch


def test_an_older_config_missing_fields_gets_their_defaults():
  """A work dir's config.json from before a field existed still reads (and resumes)."""
  cfg = method_config("draft").to_dict()
  del cfg["model"]["remat_policy"], cfg["optim"]["ema_warmup"], cfg["data"]["naflex"]
  del cfg["draft"]["mmd"]["squared"], cfg["draft"]["a"], cfg["lora"]
  cfg["draft"]["mmd_weight"] = 0.5
  opts = run_options(ml_collections.ConfigDict(cfg))
  assert opts.model.remat_policy == ModelOptions().remat_policy
  assert opts.optim.ema_warmup is False and opts.data.naflex.lengths == ()
  assert opts.settings.mmd.squared is False and opts.settings.a == 0.65
  assert opts.settings.mmd_weight == 0.5 and opts.lora.rank == 0


def test_options_cannot_change_after_validation():
  opts = validate(method_config("clip"))
  with pytest.raises(dataclasses.FrozenInstanceError):
    opts.optim.lr = 1.0
  draft = run_options(method_config("draft"))
  with pytest.raises((AttributeError, TypeError, ValueError)):
    draft.settings.a = 1.0
  assert hash(OptimOptions()) == hash(OptimOptions())


def test_eval_block_reads_its_tasks_with_their_settings():
  """eval.tasks names the blocks read; each task block gets its settings as defaults; a typo'd
  task is a ConfigError naming it."""
  cfg = method_config("clip")
  cfg.eval.tasks = "retrieval, linear_probe"
  del cfg.eval.linear_probe["alpha"]
  opts = run_options(cfg).eval
  assert opts.tasks == ("retrieval", "linear_probe") and set(opts.blocks) == set(opts.tasks)
  assert opts.blocks["linear_probe"].alpha == 1.0
  assert opts.batch_size == cfg.eval.batch_size and opts.betas == tuple(cfg.eval.betas)
  cfg.eval.tasks = "retrieval,zeroshoot"
  with pytest.raises(ConfigError, match="unknown task 'zeroshoot'.*did you mean 'zeroshot'"):
    run_options(cfg)
