"""Methods are registered objects: a method defined here, in the test file, trains through
`clipjax.main.run` (validation, data, step, checkpoint, export, evaluation) with no change
to clipjax, and the built-in ones are found by name."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from clipjax import losses
from clipjax.errors import ConfigError
from clipjax.evaluate.embed import clip_encoders
from clipjax.main import run
from clipjax.methods import (
  Evaluation,
  Method,
  get_method,
  method_config,
  method_names,
  register,
)
from clipjax.methods.context import embed_image_text, logit_scale
from clipjax.parallel.mesh import on_mesh


@register
class CaptionsOnly(Method):
  """A toy method: the CLIP loss with the image tower frozen and a scaled temperature, plus
  an extra parameter (a learnable offset added to the logit scale) to exercise init_params,
  freezing of a method's own tower, and the evaluation hook."""
  name = "toy_captions_only"
  extra_towers = ("offset",)
  settings = {"toy_weight": 2.0}  # config.toy_captions_only.toy_weight
  loss_functions = (losses.clip_loss,)  # what `loss` calls: it honours loss.block_size / exchange

  def configure(self, c):
    c.freeze = ("^clip/visual/",)

  def validate(self, cfg):
    super().validate(cfg)
    if cfg.settings.toy_weight <= 0:
      raise ConfigError(f"toy_captions_only.toy_weight must be > 0, got "
                        f"{cfg.settings.toy_weight}")

  def init_params(self, model, clip_params, cfg):
    return {"offset": {"value": jnp.zeros((), jnp.float32)}}

  def embed(self, ctx, params, batch):
    return embed_image_text(ctx, params, batch)

  def loss(self, ctx, params, emb, batch, key):
    scale = logit_scale(params) + params["offset"]["value"]
    out = ctx.cfg.toy_weight * on_mesh(losses.clip_loss, ctx.mesh)(
        emb["image"], emb["caption"], scale, options=ctx.loss)
    return out, {"scale": scale, "offset": params["offset"]["value"]}

  def evaluate(self, model, params, base_params, cfg):
    return Evaluation({"toy": clip_encoders(model, params["clip"])},
                      exports={"copy": ("copy", params["clip"])})


def toy_config():
  c = method_config("toy_captions_only")
  c.model.arch = "ViT-T-16-test"
  c.data.train = dict(kind="synthetic", size=256, resolution=32, seed=0, split="train")
  c.data.num_workers = 0
  c.batch_size, c.total_steps, c.log_every = 32, 6, 2
  c.checkpoint.every = 0
  c.export.hf = False
  c.eval.tasks = "retrieval"
  c.eval.num_workers = 0
  c.eval.retrieval.source = dict(kind="synthetic", size=64, resolution=32, seed=0, split="eval")
  return c


def test_a_method_defined_in_a_test_trains_through_main(tmp_path):
  assert "toy_captions_only" in method_names()
  results = run(toy_config(), str(tmp_path))
  assert set(results["retrieval"]) == {"toy"}  # the models named by its evaluate hook
  logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
  assert [r["step"] for r in logged] == [2, 4, 6]
  assert all(np.isfinite(r["loss"]) and "offset" in r for r in logged)
  assert logged[-1]["offset"] != 0.0  # the method's own parameter trained
  # its extra export (the hook's name + open_clip) next to the main one
  assert (tmp_path / "export" / "open_clip_model.safetensors").exists()
  assert (tmp_path / "export" / "copy" / "open_clip_model.safetensors").exists()


def test_a_method_validates_its_own_config(tmp_path):
  from clipjax.train.validate import validate
  cfg = toy_config()
  cfg.toy_captions_only.toy_weight = -1.0
  with pytest.raises(ConfigError, match="toy_weight must be > 0"):
    validate(cfg)
  cfg = toy_config()
  cfg.freeze = ("^offset/", "^clip/visual/")  # the method's own tower may be frozen by name
  validate(cfg)


def test_a_run_holds_only_its_methods_settings_and_the_old_layout_is_named():
  from clipjax.methods import MOVED_FIELDS
  from clipjax.train.validate import validate
  blocks = {name: set(method_config(name)) - set(method_config("unicl")) for name in
            ("clip", "draft", "three_tower", "mult", "multitask")}
  assert blocks == {"clip": {"clip"}, "draft": {"draft"}, "three_tower": {"three_tower"},
                    "mult": {"mult"}, "multitask": {"multitask"}}
  assert set(method_config("unicl").loss) == {"block_size", "exchange"}  # shared by all
  # every field of the previous layout is some method's setting now
  owners = {new: [n for n in method_names() if new in get_method(n).settings]
            for new in MOVED_FIELDS.values()}
  assert all(owners.values()), owners
  cfg = method_config("draft")
  cfg.loss.mmd_weight = 0.0  # a config file written for the previous layout
  with pytest.raises(ConfigError, match=r"^loss.mmd_weight is now draft.mmd_weight "):
    validate(cfg)
  cfg = method_config("clip")
  cfg.data.dialogue_mode = "concat"
  with pytest.raises(ConfigError, match=r"data.dialogue_mode is now a method's own setting "
                                        r"\(draft.dialogue_mode, three_tower.dialogue_mode\); "
                                        r"method clip has none"):
    validate(cfg)


def test_builtin_methods_are_registered_by_name():
  assert set(method_names()) >= {"clip", "lit", "siglip", "unicl", "draft", "three_tower",
                                 "multitask", "mult"}
  assert get_method("draft").adapts_pretrained and get_method("three_tower").extra_towers
  with pytest.raises(ConfigError, match="did you mean 'draft'|is not one of"):
    get_method("drfat")
  with pytest.raises(ValueError, match="needs a `name`"):
    register(type("Nameless", (Method,), {}))
