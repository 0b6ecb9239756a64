"""scripts/generate_dialogue.py end to end with tiny random BLIP-2 and LLaVA models built from
config with a locally trained tokenizer (no hub), and its parser on written generations."""
import importlib.util
import json

import numpy as np
import pytest
import torch
import transformers
from conftest import REPO
from tokenizers import ByteLevelBPETokenizer

from clipjax.data.manifest import ManifestSource
from clipjax.data.synthetic import SyntheticScenes

CORPUS = ["USER: Ask three different questions about this image. ASSISTANT: Q: what is it? A: red",
          "Question: What do you see in this image? Answer: a red cube.",
          "What makes this image unique? the blue sphere on the left"] * 20


@pytest.fixture(scope="module")
def gen():
  spec = importlib.util.spec_from_file_location("generate_dialogue",
                                                REPO / "scripts" / "generate_dialogue.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _tokenizer():
  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1,
                          special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<image>"])
  return transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>",
                                              eos_token="</s>", unk_token="<unk>",
                                              pad_token="<pad>")


def _text_ids(tok):
  return dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
              eos_token_id=tok.eos_token_id)


def _vision():
  return dict(image_size=32, patch_size=16, hidden_size=32, intermediate_size=64,
              num_hidden_layers=1, num_attention_heads=2)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("vlm")
  torch.manual_seed(0)
  tok = _tokenizer()
  image_token = tok.convert_tokens_to_ids("<image>")
  llava_proc = transformers.LlavaProcessor(
      image_processor=transformers.CLIPImageProcessor(
          size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
      tokenizer=tok, patch_size=16, vision_feature_select_strategy="default",
      num_additional_image_tokens=1)
  llava = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
      vision_config=transformers.CLIPVisionConfig(**_vision(), projection_dim=32),
      text_config=transformers.LlamaConfig(
          vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
          num_attention_heads=2, num_key_value_heads=2, **_text_ids(tok)),
      image_token_index=image_token, vision_feature_select_strategy="default"))
  llava.save_pretrained(root / "llava")
  llava_proc.save_pretrained(root / "llava")
  tok = _tokenizer()
  blip_proc = transformers.Blip2Processor(
      image_processor=transformers.BlipImageProcessor(size={"height": 32, "width": 32}),
      tokenizer=tok, num_query_tokens=4)
  blip = transformers.Blip2ForConditionalGeneration(transformers.Blip2Config(
      vision_config=_vision(),
      qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, encoder_hidden_size=32, vocab_size=len(tok)),
      text_config=transformers.OPTConfig(
          vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=1,
          num_attention_heads=2, word_embed_proj_dim=32, **_text_ids(tok)).to_dict(),
      num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>")))
  blip.save_pretrained(root / "blip2")
  blip_proc.save_pretrained(root / "blip2")
  return root


@pytest.mark.parametrize("kind", ["blip2", "llava"])
def test_end_to_end_with_resume(gen, model_dirs, tmp_path, kind):
  generator = gen.Generator(str(model_dirs / kind), max_new_tokens=8)
  assert generator.kind == {"blip2": "blip-2", "llava": "llava"}[kind]
  source = SyntheticScenes(6, 32, seed=0)
  stats = gen.generate(source, generator, tmp_path, batch=4, limit=5)
  # random weights: BLIP-2 answers are noise but answers; LLaVA's noise has no Q/A lines
  assert stats["written"] + stats["unparsable"] == 5 and stats["bad_records"] == 0
  assert json.loads((tmp_path / "generation_stats.json").read_text()) == stats
  rows = (tmp_path / "dialogues.jsonl").read_text().splitlines()
  assert len(rows) == stats["written"]
  if kind == "blip2":
    assert stats["written"] > 0
    records = ManifestSource(str(tmp_path / "dialogues.jsonl"))
    record = records[0]
    assert [q for q, _ in record["dialogue"]] == list(gen.BLIP2_QUESTIONS)
    assert record["caption"] == source[record["image_id"]]["caption"]
    # an interrupted run: the last line was cut half-way -> regenerated, nothing duplicated
    data = (tmp_path / "dialogues.jsonl").read_bytes()
    (tmp_path / "dialogues.jsonl").write_bytes(data[:-7])
  again = gen.generate(source, generator, tmp_path, batch=4, limit=6)
  lines = (tmp_path / "dialogues.jsonl").read_text().splitlines()
  ids = [json.loads(r)["image_id"] for r in lines]
  assert len(ids) == len(set(ids))
  assert again["resumed_skipped"] == max(stats["written"] - 1, 0)
  assert again["written"] + again["unparsable"] == 6 - again["resumed_skipped"]


def test_parser_on_realistic_and_malformed_generations(gen):
  realistic = ("Q: What color is the cube?\nA: The cube is red.\n\n"
               "Q: How many objects are there?\nA: There are two objects,\na cube and a sphere.\n"
               "Q: Where is the sphere?\nA: To the left of the cube.")
  assert gen.parse_qa(realistic) == [
      ["What color is the cube?", "The cube is red."],
      ["How many objects are there?", "There are two objects, a cube and a sphere."],
      ["Where is the sphere?", "To the left of the cube."]]
  numbered = ("Sure! Here are three questions:\n1. **Question:** Is it sunny?\n   **Answer:** Yes.\n"
              "Q2: What animal is shown? A2: nothing\nQ2: What animal is shown?\nA2: A dog.\n"
              "Q3: Is the dog running?\nA3: No, it is sitting.\nQ4: Extra?\nA4: ignored")
  assert gen.parse_qa(numbered) == [["Is it sunny?", "Yes."], ["What animal is shown?", "A dog."],
                                    ["Is the dog running?", "No, it is sitting."]]
  for malformed in ("", "A red cube on a table.", "Q: one?\nA: yes\nQ: two?\nA: no",
                    "Q: one?\nQ: two?\nQ: three?", "A: yes\nA: no\nA: maybe",
                    "Q: one?\nA: yes\nQ: two?\nA:\nQ: three?\nA: "):
    assert gen.parse_qa(malformed) is None, malformed


def test_missing_or_unsupported_model_directory(gen, tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json.*BLIP-2 or LLaVA"):
    gen.Generator(str(tmp_path / "absent"))
  transformers.BertConfig(vocab_size=10).save_pretrained(tmp_path)
  with pytest.raises(ValueError, match="model_type 'bert' is not supported; supported: blip-2"):
    gen.Generator(str(tmp_path))


def test_bad_records_are_counted(gen, tmp_path):
  from clipjax.data.records import BadRecord
  source = [BadRecord("corrupt_image", "x"), {"image": str(tmp_path / "missing.jpg"),
                                                "image_id": 1, "caption": "c"},
            {"image": np.zeros((8, 8, 3), np.uint8), "image_id": 2, "caption": "c"}]
  stats = gen.generate(source, lambda images: [[["q", "a"]]] * len(images), tmp_path / "out")
  assert stats == dict(written=1, resumed_skipped=0, unparsable=0, bad_records=2)
  assert ManifestSource(str(tmp_path / "out" / "dialogues.jsonl"))[0]["dialogue"] == [["q", "a"]]
