"""Token ids equal open_clip's SimpleTokenizer on varied strings; the ftfy shortcut is exact."""
import random
import string

import ftfy
import numpy as np
import open_clip
import pytest

from clipjax.models.tokenizers import get_tokenizer
from clipjax.text.tokenizer import EOT_ID, SOT_ID, Tokenizer, clean_text

_PIECES = [
    # plain words and punctuation
    *"a photo of the dog cat sitting on table with two people Standing NEAR large building".split(),
    ",", ".", "!", "?", ";", ":", "...", "--", "(", ")", "[", "]", "\"", "'", "`", "~", "@", "#",
    "$", "%", "^", "*", "+", "=", "/", "\\", "|", "<", ">", "{", "}", "_",
    "It's", "I'LL", "they're", "we've", "I'm", "he'd", "don't", "'S", "'ſ",
    # numbers
    "0", "42", "3.14159", "1,000,000", "2024-11-22", "12:30pm", "½", "²", "٣", "Ⅻ",
    # accents, other scripts, combining marks
    "naïve", "café", "Ångström", "Éléphant", "straße", "ǅemal", "İstanbul", "e\u0301", "Ω",
    "東京タワー", "北京", "한국어", "ありがとう", "Привет", "Ελληνικά", "עברית", "العربية", "हिन्दी",
    "ไทย", "Tiếng Việt",
    # emoji, symbols, zero-width and special spaces
    "🎉", "👍🏽", "👨‍👩‍👧", "🇬🇷", "❤️", "™", "©", "€", "→", "\u200b", "\u00a0", "\u2003", "\u3000",
    # html entities and mojibake (ftfy territory)
    "&amp;", "&lt;b&gt;", "&quot;quoted&quot;", "&#39;", "&nbsp;", "&eacute;", "&#x1F600;",
    "&amp;amp;amp;", "cafÃ©", "Ã¼ber", "â€œsmartâ€\x9d", "ﬁne", "ＡＢＣ１２３", "“curly”", "‘single’",
    # whitespace and control characters
    " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x00", "\x1b[31m", "\x7f", "\u2028",
    # the special-token strings themselves
    "<start_of_text>", "<end_of_text>", "<|endoftext|>",
]


def _varied_strings(n: int, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  out = ["", " ", "\n\t ", "a", "A", "x" * 1000, "word " * 200, "東" * 300, "🎉" * 100,
         "".join(chr(c) for c in range(32, 127))]
  while len(out) < n:
    k = rng.choice([1, 2, 3, 5, 8, 13, 40, 120])
    sep = rng.choice(["", " ", " ", " ", "  ", "\t"])
    out.append(sep.join(rng.choice(_PIECES) for _ in range(k)))
  return out


@pytest.fixture(scope="module")
def reference():
  return open_clip.get_tokenizer("ViT-B-32")


def test_matches_openclip_on_5000_varied_strings(reference):
  texts = _varied_strings(5200)
  ours = get_tokenizer("ViT-B-32")(texts)
  ref = reference(texts).numpy()
  assert ours.dtype == np.int32 and ours.shape == (len(texts), 77)
  mismatches = [t for t, a, b in zip(texts, ours, ref) if not np.array_equal(a, b)]
  assert not mismatches, f"{len(mismatches)} mismatches, e.g. {mismatches[:3]!r}"


def test_other_context_lengths_match_openclip(reference):
  texts = _varied_strings(300, seed=1)
  tok = Tokenizer()
  for ctx in (16, 248):
    np.testing.assert_array_equal(tok(texts, context_length=ctx), reference(texts, ctx).numpy())


def test_ftfy_shortcut_is_exact_on_printable_ascii():
  """clean_text skips ftfy for printable ASCII without '&'; ftfy must be the identity there."""
  rng = random.Random(0)
  alphabet = "".join(c for c in string.printable if c not in "&\r\x0b\x0c")
  for _ in range(3000):
    s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
    assert ftfy.fix_text(s) == s, repr(s)


def test_truncation_keeps_end_token_or_errors():
  tok = Tokenizer(context_length=8)
  ids = tok(["one two three four five six seven eight nine"])[0]
  assert ids[0] == SOT_ID and ids[-1] == EOT_ID and (ids != 0).all()
  with pytest.raises(ValueError, match="text 0 has 11 tokens, more than the context length 8"):
    tok(["one two three four five six seven eight nine"], truncate=False)
  with pytest.raises(TypeError, match="text 1 is a int"):
    tok(["fine", 3])


def test_decode_inverts_encode():
  tok = Tokenizer()
  assert tok.decode(tok(["A Photo of  a CAT!"])[0]) == clean_text("A Photo of  a CAT!").replace(
      "!", " !")
