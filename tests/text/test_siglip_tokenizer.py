"""SigLIP tokenizers: clipjax's ids against open_clip's `HFTokenizer(clean='canonicalize')` for
the three kinds SigLIP models use (T5 SentencePiece, Gemma for SigLIP 2, XLM-R style for the
i18n models), each trained locally on a small corpus (no hub), and the COCO sample captions."""
import json
import re

import numpy as np
import open_clip
import pytest
from conftest import write_siglip_tokenizer

from clipjax.models import get_model_config
from clipjax.models.tokenizers import get_tokenizer
from clipjax.text.hf_tokenizer import HFTokenizer, canonicalize

TEXTS = ["A Photo of a CAT!", "two_dogs... play; in (the) snow?", "  spaced   out\ttext  ",
         "&amp;lt;b&amp;gt;bold&amp;lt;/b&amp;gt;", "naïve café 東京 🎉", "",
         "a very long caption " * 40, "don't stop-believing: 100% #1"]


@pytest.mark.parametrize("kind, arch", [("t5", "ViT-B-16-SigLIP"), ("gemma", "ViT-B-16-SigLIP2"),
                                        ("xlmr", "ViT-B-16-SigLIP-i18n-256")])
def test_ids_equal_open_clip(tmp_path, kind, arch, coco_sample):
  path = write_siglip_tokenizer(tmp_path / kind, kind)
  cfg = get_model_config(arch)
  assert dict(cfg.text.tokenizer_kwargs) == {"clean": "canonicalize"}
  cfg = cfg.replace(text={"hf_tokenizer_name": path})  # the local tokenizer in the hub's place
  annotations = json.loads((coco_sample / "captions_coco_format.json").read_text())
  texts = TEXTS + [a["caption"] for a in annotations["annotations"]]
  ours = get_tokenizer(cfg)(texts)
  theirs = open_clip.tokenizer.HFTokenizer(path, context_length=64, clean="canonicalize")(
      texts).numpy()
  assert ours.dtype == np.int32 and ours.shape == (len(texts), 64)
  np.testing.assert_array_equal(ours, theirs)


def test_canonicalize_equals_open_clip_on_tricky_text():
  for text in TEXTS:
    assert canonicalize(text) == open_clip.tokenizer._clean_canonicalize(text), text


def test_missing_tokenizer_names_what_to_do(tmp_path):
  from huggingface_hub.constants import HF_HUB_CACHE
  with pytest.raises(FileNotFoundError, match=r"HF tokenizer 'nobody/nothing' is neither a "
                     r"directory with tokenizer files nor in the Hugging Face cache "
                     + re.escape(HF_HUB_CACHE)):
    HFTokenizer("nobody/nothing", 64, "canonicalize")
  with pytest.raises(ValueError, match="clean mode must be one of whitespace, lower, "
                     "canonicalize, got 'upper'"):
    HFTokenizer(write_siglip_tokenizer(tmp_path / "t5", "t5"), 64, "upper")
