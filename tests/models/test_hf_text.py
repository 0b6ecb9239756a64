"""HF text towers (RoBERTa / XLM-R / mT5 / T5 / M2M100 encoders) against open_clip's HFTextEncoder and
transformers, with tiny random models and tokenizers built locally (no hub)."""
import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import open_clip
import pytest
import torch
import transformers
from conftest import rel_err, write_hf_text_dir

from clipjax.convert.hf_text import export_hf_text, load_hf_text_weights
from clipjax.convert.io import CheckpointError
from clipjax.convert.load import load_openclip
from clipjax.convert.openclip import (
  export_openclip,
  params_to_state_dict,
  state_dict_to_params,
)
from clipjax.models import CLIP, create_model, get_model_config
from clipjax.models.registry import config_from_openclip_json
from clipjax.models.tokenizers import get_tokenizer

TOL = 1e-5  # observed 4e-7 .. 6e-7: float32 summation-order differences
CORPUS = ["a photo of a cat", "Two dogs play in the snow, at night!", "naïve café 東京 🎉",
          "the red cube is left of the blue sphere", "What colour is the large triangle?",
          "There are three objects; the green one is small.", "  spaces   and\ttabs  ",
          "A &amp; B", "un chat noir sur un toit", "zwei Hunde im Schnee"]
CAPTIONS = CORPUS[:6] + ["", "a very long caption " * 30, "A &amp;amp; B  with   spaces"]


def _openclip_json(hf_dir, nllb: bool = False):
  """A small open_clip JSON around the HF directory; `nllb`: NLLB-CLIP's text options (the
  first token's state, a linear projection)."""
  pooling = dict(hf_pooler_type="cls_pooler", hf_proj_type="linear") if nllb else dict(
      hf_pooler_type="mean_pooler")
  return dict(embed_dim=32, vision_cfg=dict(image_size=32, layers=1, width=64, patch_size=16),
              text_cfg=dict(hf_model_name=str(hf_dir), hf_tokenizer_name=str(hf_dir),
                            hf_model_pretrained=False, **pooling))


@pytest.fixture(scope="module", params=["roberta", "xlm-roberta", "mt5", "m2m_100"])
def tower(request, tmp_path_factory):
  """(hf_dir, open_clip CustomTextCLIP with perturbed weights, its state_dict, CLIPConfig)."""
  d = tmp_path_factory.mktemp(request.param)
  hf_dir = write_hf_text_dir(d, request.param, CORPUS)
  torch.manual_seed(0)
  spec = _openclip_json(hf_dir, nllb=request.param == "m2m_100")
  ref = open_clip.model.CustomTextCLIP(**spec).eval()
  with torch.no_grad():
    for p in ref.parameters():
      p.add_(torch.randn_like(p) * 0.02)
  sd = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
  return hf_dir, ref, sd, config_from_openclip_json(spec)


def test_tokenizer_matches_open_clip(tower):
  hf_dir, _, _, cfg = tower
  ours = get_tokenizer(cfg)(CAPTIONS)
  theirs = open_clip.tokenizer.HFTokenizer(str(hf_dir), context_length=77)(CAPTIONS).numpy()
  assert ours.dtype == np.int32 and np.array_equal(ours, theirs)


def test_text_embeddings_match_open_clip(tower):
  hf_dir, ref, sd, cfg = tower
  params = state_dict_to_params(sd, cfg)
  model = CLIP(cfg)
  ids = get_tokenizer(cfg)(CAPTIONS)
  with torch.no_grad():
    want = ref.encode_text(torch.from_numpy(ids.astype(np.int64))).numpy()
  got = model.apply({"params": params}, jnp.asarray(ids), method=model.encode_text)
  assert rel_err(np.asarray(got), want) < TOL
  back = params_to_state_dict(params)  # and back to open_clip's names, bit for bit
  assert set(back) == set(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)


def test_export_loads_in_open_clip(tower, tmp_path):
  hf_dir, ref, sd, cfg = tower
  params = state_dict_to_params(sd, cfg)
  json_path = export_openclip(params, cfg, tmp_path / "model.safetensors")
  assert json.loads(json_path.read_text())["text_cfg"]["hf_model_name"] == str(hf_dir)
  open_clip.add_model_config(json_path)
  reloaded = open_clip.create_model("model", pretrained=str(tmp_path / "model.safetensors"))
  assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in ref.state_dict().items())
  _, loaded = load_openclip(tmp_path / "model.safetensors", arch=cfg)
  proj = "proj_0" if cfg.text.proj_type == "mlp" else "proj"
  assert np.array_equal(loaded["text"][proj]["kernel"], params["text"][proj]["kernel"])


def test_plain_hf_checkpoint_round_trip(tower, tmp_path):
  """export_hf_text -> transformers' own encoder gives our hidden states; load_hf_text_weights
  reads such a directory (and a full HF model's, with pooler / decoder tensors) back."""
  hf_dir, _, sd, cfg = tower
  params = state_dict_to_params(sd, cfg)
  if cfg.text.family == "m2m_100":
    return _m2m100_checkpoint_round_trip(hf_dir, params, sd, cfg, tmp_path)
  export_hf_text(params, cfg.text, tmp_path / "hf")
  t5 = cfg.text.family == "t5"
  auto = (transformers.MT5EncoderModel if t5 else transformers.AutoModel)
  hf = auto.from_pretrained(tmp_path / "hf").eval()
  ids = get_tokenizer(cfg)(CAPTIONS)
  mask = (ids != cfg.text.pad_token_id).astype(np.int64)
  with torch.no_grad():
    hidden = hf(input_ids=torch.from_numpy(ids.astype(np.int64)),
                attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  from clipjax.models.hf_text import RobertaEncoder, T5Encoder
  enc = (T5Encoder if t5 else RobertaEncoder)(cfg.text)
  ours = enc.apply({"params": params["text"]["transformer"]}, jnp.asarray(ids), jnp.asarray(mask))
  assert rel_err(np.asarray(ours), hidden) < TOL
  _, fresh = create_model(cfg)
  loaded = load_hf_text_weights(fresh, cfg.text, tmp_path / "hf")
  back = params_to_state_dict({"text": loaded["text"]})
  assert all(np.array_equal(back[k], sd[k]) for k in back if k.startswith("text.transformer."))
  # a checkpoint of another size is refused, naming the hyper-parameter
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  config["num_layers" if t5 else "num_hidden_layers"] = 3
  (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match="num_(hidden_)?layers=3 \\(expected 2\\)"):
    load_hf_text_weights(fresh, cfg.text, tmp_path / "hf")


def _m2m100_checkpoint_round_trip(hf_dir, params, sd, cfg, tmp_path):
  """NLLB: an HF M2M100Model directory (its encoder embedding tied to `model.shared`) loads
  into the tower, whose hidden states are the HF encoder's (sinusoidal positions, scaled
  embeddings); writing an HF directory is refused (no encoder-only class)."""
  from clipjax.models.hf_m2m100 import M2M100Encoder
  hf = transformers.M2M100Model(transformers.M2M100Config.from_pretrained(hf_dir)).eval()
  encoder = {k.removeprefix("text.transformer."): torch.from_numpy(v) for k, v in sd.items()
             if k.startswith("text.transformer.")}
  hf.encoder.load_state_dict(encoder)
  hf.shared.weight.data.copy_(encoder["embed_tokens.weight"])
  hf.save_pretrained(tmp_path / "hf")
  _, fresh = create_model(cfg)
  loaded = load_hf_text_weights(fresh, cfg.text, tmp_path / "hf")
  back = params_to_state_dict({"text": loaded["text"]})
  assert all(np.array_equal(back[k], sd[k]) for k in back if k.startswith("text.transformer."))
  ids = get_tokenizer(cfg)(CAPTIONS)
  assert (ids[:, 0] == get_tokenizer(cfg).tokenizer.convert_tokens_to_ids("eng_Latn")).all()
  mask = (ids != cfg.text.pad_token_id).astype(np.int64)
  with torch.no_grad():
    hidden = hf.encoder(input_ids=torch.from_numpy(ids.astype(np.int64)),
                        attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  ours = M2M100Encoder(cfg.text).apply({"params": params["text"]["transformer"]},
                                       jnp.asarray(ids), jnp.asarray(mask))
  assert rel_err(np.asarray(ours), hidden) < TOL
  with pytest.raises(CheckpointError, match="no encoder-only M2M100 model"):
    export_hf_text(params, cfg.text, tmp_path / "out")


def test_t5_relu_encoder_matches_transformers(tmp_path):
  """Original T5 (ReLU feed-forward), which open_clip's HF adapter does not list."""
  write_hf_text_dir(tmp_path, "t5", CORPUS)
  cfg = config_from_openclip_json(_openclip_json(tmp_path))
  assert cfg.text.model_type == "t5" and not cfg.text.gated_act
  torch.manual_seed(0)
  hf = transformers.T5EncoderModel(transformers.T5Config.from_pretrained(tmp_path)).eval()
  _, fresh = create_model(cfg)
  hf.save_pretrained(tmp_path / "w")
  params = load_hf_text_weights(fresh, cfg.text, tmp_path / "w")
  ids = get_tokenizer(cfg)(CAPTIONS)
  mask = (ids != cfg.text.pad_token_id).astype(np.int64)
  with torch.no_grad():
    hidden = hf(input_ids=torch.from_numpy(ids.astype(np.int64)),
                attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  from clipjax.models.hf_text import T5Encoder
  ours = T5Encoder(cfg.text).apply({"params": params["text"]["transformer"]}, jnp.asarray(ids),
                                   jnp.asarray(mask))
  assert rel_err(np.asarray(ours), hidden) < TOL


def test_unsupported_and_missing_hf_models_are_clear_errors(tmp_path):
  transformers.BertConfig(vocab_size=10).save_pretrained(tmp_path)
  with pytest.raises(ValueError, match="model_type 'bert'.*supported: roberta"):
    config_from_openclip_json(_openclip_json(tmp_path))
  with pytest.raises(ValueError, match="no config.json.*not a known hub id"):
    config_from_openclip_json(_openclip_json(tmp_path / "absent"))


@pytest.mark.parametrize("arch, family", [("xlm-roberta-large-ViT-H-14", "xlm-roberta"),
                                          ("mt5-xl-ViT-H-14", "mt5"),
                                          ("nllb-clip-large", "m2m_100")])
def test_zoo_text_towers_at_published_width(arch, family, tmp_path):
  """The registered hub towers, known without the hub, at 2 blocks and their published widths
  (head size, MLP width, M2M100's sqrt(1024) embedding scale): open_clip's HFTextEncoder built
  from an HF directory of those sizes (a small local tokenizer and vocabulary) against ours."""
  from clipjax.convert.hf_text import hf_text_config
  hf_dir = write_hf_text_dir(tmp_path, family, CORPUS)  # the tokenizer; its config replaced:
  text = get_model_config(arch).text
  vocab = len(transformers.AutoTokenizer.from_pretrained(hf_dir))
  text = dataclasses.replace(text, hf_model_name=str(hf_dir), layers=2, vocab_size=vocab)
  hf_text_config(text).save_pretrained(hf_dir)
  spec = get_model_config(arch).to_openclip_json()
  spec.update(embed_dim=32, vision_cfg=dict(image_size=32, layers=1, width=64, patch_size=16),
              text_cfg=dict(text.to_openclip_text_cfg(), hf_model_pretrained=False))
  cfg = config_from_openclip_json(spec)
  assert cfg.text == dataclasses.replace(text, hf_tokenizer_name=str(hf_dir))
  torch.manual_seed(0)
  ref = open_clip.model.CustomTextCLIP(**spec).eval()
  with torch.no_grad():
    for p in ref.text.parameters():
      p.add_(torch.randn_like(p) * 0.02)
  sd = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
  params = state_dict_to_params(sd, cfg)
  ids = get_tokenizer(cfg)(CAPTIONS)
  with torch.no_grad():
    want = ref.encode_text(torch.from_numpy(ids.astype(np.int64))).numpy()
  model = CLIP(cfg)
  got = model.apply({"params": params}, jnp.asarray(ids), method=model.encode_text)
  assert rel_err(np.asarray(got), want) < TOL
