"""Training on a SigLIP base (issue: SigLIP towers, part 5): configs/siglip.py from scratch on
the tiny SigLIP 2 architecture (timm trunk + MAP head, bidirectional last-token text tower)
gives the base; SigLIP fine-tuning, LiT, DRAFT and CLIP-3Modal then adapt it, in the sigmoid
form of docs/methods.md §7b (the base's t and b) and, for DRAFT, the softmax form with the base's t.

"The loss falls" is measured on one fixed held-out batch with the method's own objective:
base parameters vs trained ones (same PRNG key for DRAFT's MMD features)."""
import importlib.util
import math

import jax
import numpy as np
import pytest
from conftest import REPO
from method_runs import CHANCE, config_file, fit, held_out_r1, jax_leaves, load_config

import clipjax
from clipjax.data.synthetic import SyntheticScenes
from clipjax.methods import get_method, run_options
from clipjax.methods.three_tower import dialogue_as_text_tower, init_dialogue_params
from clipjax.parallel.mesh import make_mesh
from clipjax.text.tokenizer import Tokenizer

_spec = importlib.util.spec_from_file_location("np_reference",
                                               REPO / "tests" / "losses" / "np_reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

ARCH = "ViT-T-16-SigLIP2-test"
# The base's t and b are set to values no init or short run gives, to see they are the ones used.
BASE_SCALE, BASE_BIAS = math.log(20.0), -7.0


@pytest.fixture(scope="module")
def siglip_base(tmp_path_factory):
  """configs/siglip.py on the tiny SigLIP 2 architecture from scratch; its export (with t = 20,
  b = −7) is the SigLIP base of the tests below."""
  workdir = tmp_path_factory.mktemp("siglip")
  result = fit(load_config("siglip", **{"model.arch": ARCH, "total_steps": 60}), workdir)
  clip = dict(result["params"]["clip"], logit_scale=np.float32(BASE_SCALE),
              logit_bias=np.float32(BASE_BIAS))
  path = workdir / "base.safetensors"
  clipjax.export_openclip(clip, ARCH, path)
  return result, str(path)


def test_siglip_learns_from_scratch_on_siglip_towers(siglip_base):
  result, _ = siglip_base
  clip = result["params"]["clip"]
  assert held_out_r1(result["model"], clip) >= 3 * CHANCE
  # trained from open_clip's init (t' = log 10, b = −10) by the sigmoid loss
  assert float(clip["logit_bias"]) != -10.0 and float(clip["logit_scale"]) != math.log(10.0)


def fixed_batch(dialogue_mode: str, n: int = 32) -> dict:
  """One held-out batch as the pipeline ships it: uint8 pixels and full-length token ids (the
  bidirectional SigLIP text tower reads the padding, so no trimming)."""
  scenes = [SyntheticScenes(n, resolution=32, seed=1, split="eval")[i] for i in range(n)]
  tok = Tokenizer(context_length=16)
  qa = [[f"Q: {q} A: {a}" for q, a in s["dialogue"]] for s in scenes]
  dialogue = [d[0] if dialogue_mode == "one_qa" else " ".join(d) for d in qa]
  return {"image": np.stack([s["image"] for s in scenes]),
          "caption": tok([s["caption"] for s in scenes]), "dialogue": tok(dialogue),
          "image_id": np.arange(n)}


def objective_values(name, cfg, model, *param_sets) -> list[float]:
  """The method's loss on the fixed batch for each parameter set; in the sigmoid form also
  checked against the float64 NumPy SL(Q, K) of the same embeddings (docs/methods.md §7b)."""
  objective = get_method(name).objective(model, make_mesh(devices=jax.devices()[:1]),
                                         run_options(cfg))
  batch, key = fixed_batch(cfg[name].get("dialogue_mode", "one_qa")), jax.random.key(0)

  def evaluate(params):
    emb = objective.embed(params, batch)
    return (emb, *objective.loss(params, emb, batch, key))

  run = jax.jit(evaluate)  # one compile for both parameter sets
  return [_checked(name, cfg, params, *run(params)) for params in param_sets]


def _checked(name, cfg, params, emb, loss, aux) -> float:
  emb = jax.tree.map(lambda x: np.asarray(x, np.float64), emb)
  if cfg[name].get("form") == "sigmoid":  # observed relative error ~1e-7
    t, b = np.exp(float(params["clip"]["logit_scale"])), float(params["clip"]["logit_bias"])
    i, y = emb["image"], emb["caption"]
    want, got = {
        "lit": (lambda: ref.sigmoid_loss(i, y, t, b), loss),
        "draft": (lambda: ref.draft_contrastive_sigmoid(i, y, emb["dialogue"], t, b),
                  aux.get("contrastive")),
        "three_tower": (lambda: ref.three_tower_sigmoid(i, y, emb["dialogue"], t, b), loss),
    }[name]
    np.testing.assert_allclose(float(got), want(), rtol=1e-5)
  return float(loss)


@pytest.mark.parametrize("name,form", [
    ("siglip", None),  # the siglip method's own loss (form is for adaptation methods)
    ("lit", "sigmoid"), ("draft", "sigmoid"), ("three_tower", "sigmoid"), ("draft", "softmax")])
def test_methods_adapt_a_siglip_base(siglip_base, tmp_path, name, form):
  _, checkpoint = siglip_base
  lr = {"siglip": 1e-4, "lit": 1e-3}.get(name, 3e-4)
  cfg = load_config(name, **{"model.arch": ARCH, "model.checkpoint": checkpoint,
                             **({f"{name}.form": form} if form else {}),
                             "total_steps": 8, "batch_size": 32,
                             "optim.lr": lr, "optim.warmup_steps": 2})
  result = fit(cfg, tmp_path)
  model, params = result["model"], result["params"]
  _, base = clipjax.load_openclip(checkpoint)
  assert model.cfg.init_logit_bias == BASE_BIAS
  before = {"clip": base}
  if name == "three_tower":
    before["dialogue"] = init_dialogue_params(base)
  start, end = objective_values(name, cfg, model, before, params)
  assert end < start, (name, form, start, end)

  clip = params["clip"]
  if name in ("draft", "three_tower"):  # the base's t and b stay frozen (methods.md §2, §3, §7b)
    assert float(clip["logit_scale"]) == np.float32(BASE_SCALE)
    assert float(clip["logit_bias"]) == np.float32(BASE_BIAS)
  else:  # trained from the base's values, not re-initialised
    assert abs(float(clip["logit_bias"]) - BASE_BIAS) < 0.05
    assert abs(float(clip["logit_scale"]) - BASE_SCALE) < 0.05
  frozen = {"siglip": {}, "lit": base["visual"], "draft": base["visual"],
            "three_tower": base}[name]
  trained = {"siglip": {}, "lit": clip["visual"], "draft": clip["visual"],
             "three_tower": clip}[name]
  for a, b in zip(jax_leaves(frozen), jax_leaves(trained)):
    assert np.array_equal(a, b)
  text = dialogue_as_text_tower(clip, params["dialogue"]) if name == "three_tower" else clip
  assert not np.array_equal(text["text"]["text_projection"]["kernel"],
                            base["text"]["text_projection"]["kernel"])


def test_siglip_config_fine_tunes_the_named_weights():
  """configs/siglip.py:arch=<a SigLIP architecture> loads its webli weights at a fine-tuning
  learning rate; a CLIP architecture still trains from scratch."""
  cfg = config_file("siglip", "arch=ViT-B-16-SigLIP2")
  assert (cfg.model.checkpoint, cfg.model.pretrained) == ("ViT-B-16-SigLIP2", "webli")
  assert cfg.optim.lr == 1e-5
  cfg = config_file("siglip", "arch=ViT-B-32")
  assert (cfg.model.checkpoint, cfg.model.pretrained, cfg.optim.lr) == ("", "", 1e-3)


def test_sigmoid_form_needs_a_siglip_base(tmp_path):
  from clipjax.errors import ConfigError
  from clipjax.train.validate import validate
  with pytest.raises(ConfigError, match="lit.form='sigmoid' needs a SigLIP base with a "
                                        "logit_bias .* ViT-T-16-test has none"):
    validate(load_config("lit", **{"lit.form": "sigmoid"}))
  with pytest.raises(ConfigError,
                     match="three_tower.bidirectional has no meaning in the sigmoid form"):
    validate(load_config("three_tower", **{"three_tower.form": "sigmoid",
                                           "three_tower.bidirectional": True,
                                           "model.checkpoint": str(tmp_path / "base.pt")}))
  with pytest.raises(ConfigError, match=r"lit.form='sigmiod' is not one of .*did you mean "
                                        r"'sigmoid'"):
    validate(load_config("lit", **{"lit.form": "sigmiod"}))
