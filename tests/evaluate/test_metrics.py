"""Evaluation metrics against LAION's CLIP_benchmark (retrieval, zero-shot), float64 NumPy
references, and hand-computed VQA accuracies."""
import jax
import numpy as np
import pytest
import torch
from clip_benchmark.metrics import zeroshot_classification as cb_zs
from clip_benchmark.metrics import zeroshot_retrieval as cb_ret
from jax.sharding import Mesh

from clipjax import evaluate


def _retrieval_case(seed, n_images=120, dim=32, noise=2.5):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n_images, dim)).astype(np.float32)
  per_image = rng.integers(1, 6, size=n_images)  # 1..5 captions per image
  t2i = np.repeat(np.arange(n_images), per_image)
  rng.shuffle(t2i)
  texts = images[t2i] + noise * rng.normal(size=(len(t2i), dim)).astype(np.float32)
  return images, texts, t2i


def _clip_benchmark_recalls(images, texts, t2i, ks):
  img = torch.nn.functional.normalize(torch.from_numpy(images), dim=-1)
  txt = torch.nn.functional.normalize(torch.from_numpy(texts), dim=-1)
  scores = txt @ img.t()
  positive = torch.zeros_like(scores, dtype=torch.bool)
  positive[torch.arange(len(scores)), torch.from_numpy(t2i)] = True
  out = {}
  for k in ks:  # the exact expressions of clip_benchmark's evaluate()
    out[f"image_retrieval_recall@{k}"] = (cb_ret.batchify(
        cb_ret.recall_at_k, scores, positive, 64, "cpu", k=k) > 0).float().mean().item()
    out[f"text_retrieval_recall@{k}"] = (cb_ret.batchify(
        cb_ret.recall_at_k, scores.T, positive.T, 64, "cpu", k=k) > 0).float().mean().item()
  return out


def _mrr_reference(images, texts, t2i):
  """float64: 1 / rank of the first correct item, by full sorting."""
  img = images / np.linalg.norm(images, axis=1, keepdims=True)
  txt = texts / np.linalg.norm(texts, axis=1, keepdims=True)
  s = txt.astype(np.float64) @ img.astype(np.float64).T
  t_rank = [1 + int(np.argmax(np.argsort(-row) == t2i[i])) for i, row in enumerate(s)]
  i_rank = []
  for j in range(len(images)):
    order = np.argsort(-s[:, j])
    i_rank.append(1 + int(np.argmax(t2i[order] == j)))
  return np.mean(1 / np.array(t_rank)), np.mean(1 / np.array(i_rank))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_equals_clip_benchmark(seed):
  images, texts, t2i = _retrieval_case(seed)
  ks = (1, 5, 10)
  ours = evaluate.retrieval_metrics(images, texts, t2i, ks=ks)
  ref = _clip_benchmark_recalls(images, texts, t2i, ks)
  for key, value in ref.items():
    # CLIP_benchmark averages in float32; 1e-6 is far below one item (1/600).
    assert ours[key] == pytest.approx(value, abs=1e-6), key
  assert 0.05 < ours["image_retrieval_recall@1"] < 0.95  # the case is neither trivial nor hopeless
  t_mrr, i_mrr = _mrr_reference(images, texts, t2i)
  assert ours["image_retrieval_mrr"] == pytest.approx(t_mrr, rel=1e-12)
  assert ours["text_retrieval_mrr"] == pytest.approx(i_mrr, rel=1e-12)


def test_blocked_on_mesh_equals_dense_single_device():
  assert jax.local_device_count() == 8
  images, texts, t2i = _retrieval_case(3, n_images=203)  # not a multiple of 8 devices
  one = Mesh(np.asarray(jax.local_devices()[:1]), ("gallery",))
  dense = evaluate.retrieval_ranks(images, texts, t2i, block_size=len(texts), mesh=one)
  blocked = evaluate.retrieval_ranks(images, texts, t2i, block_size=37)  # 8 devices
  np.testing.assert_array_equal(dense[0], blocked[0])
  np.testing.assert_array_equal(dense[1], blocked[1])


def test_retrieval_bad_input():
  images, texts, t2i = _retrieval_case(4, n_images=10)
  with pytest.raises(ValueError, match="point to no image"):
    evaluate.retrieval_metrics(images, texts, np.where(t2i == 0, 10, t2i))
  with pytest.raises(ValueError, match="have no caption"):
    evaluate.retrieval_metrics(np.concatenate([images, images[:1]]), texts, t2i)
  with pytest.raises(ValueError, match=r"\[N_images, D\]"):
    evaluate.retrieval_metrics(images[:, :5], texts, t2i)


def _cb_accuracy(output, target, topk):
  """clip_benchmark's accuracy(): its float(ndarray of shape [1]) fails on numpy >= 2.4, so it
  runs on a numpy shim that returns the 0-d value (the adaptation the issue allows)."""
  try:
    return cb_zs.accuracy(output, target, topk=topk)
  except TypeError:
    class _Scalar(torch.Tensor):
      def numpy(self, *a, **k):
        return torch.Tensor.numpy(self, *a, **k).reshape(())
    return cb_zs.accuracy(output.as_subclass(_Scalar), target, topk=topk)


class _TableTextModel(torch.nn.Module):
  """encode_text = rows of a fixed random table, indexed by the tokenizer below."""

  def __init__(self, table):
    super().__init__()
    self.table = torch.from_numpy(table)

  def encode_text(self, ids):
    return self.table[ids]


def test_zero_shot_equals_clip_benchmark():
  rng = np.random.default_rng(0)
  classnames = [f"class{i}" for i in range(12)]
  templates = ["a photo of a {c}.", "a drawing of the {c}.", "{c}, up close."]
  prompts = [t.replace("{c}", c) for c in classnames for t in templates]
  vocab = {p: i for i, p in enumerate(prompts)}
  table = rng.normal(size=(len(prompts), 16)).astype(np.float32)
  encode = lambda texts: table[[vocab[t] for t in texts]]
  ours = evaluate.zero_shot_classifier(encode, classnames, templates)
  ref = cb_zs.zero_shot_classifier(_TableTextModel(table),
                                   lambda texts: torch.tensor([vocab[t] for t in texts]),
                                   classnames, templates, "cpu", amp=False).numpy()
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)

  labels = rng.integers(0, 12, size=300)
  images = ours.T[labels] + 0.9 * rng.normal(size=(300, 16)).astype(np.float32)
  metrics = evaluate.zero_shot_metrics(images, ours, labels)
  logits = torch.from_numpy(100 * (images / np.linalg.norm(images, axis=1, keepdims=True)) @ ref)
  top1, top5 = _cb_accuracy(logits, torch.from_numpy(labels), topk=(1, 5))
  from sklearn.metrics import balanced_accuracy_score
  balanced = balanced_accuracy_score(labels, logits.argmax(1).numpy())
  assert metrics["top1"] == pytest.approx(top1, abs=1e-12)
  assert metrics["top5"] == pytest.approx(top5, abs=1e-12)
  assert metrics["mean_per_class_recall"] == pytest.approx(balanced, abs=1e-12)
  assert 0.1 < metrics["top1"] < 0.99


def test_zero_shot_classifier_numpy_reference_and_cache(tmp_path):
  rng = np.random.default_rng(1)
  table = {}
  def encode(texts):
    calls.append(len(texts))
    return np.stack([table.setdefault(t, rng.normal(size=8)) for t in texts])
  calls = []
  names, templates = ["cat", "dog"], ["a {c}", "the {}"]
  w = evaluate.zero_shot_classifier(encode, names, templates, cache_path=tmp_path / "w.npz",
                                    cache_key="model-a")
  unit = lambda v: v / np.linalg.norm(v)
  for j, c in enumerate(names):
    ref = unit(np.mean([unit(table[f"a {c}"]), unit(table[f"the {c}"])], axis=0))
    np.testing.assert_allclose(w[:, j], ref, rtol=1e-6)
  again = evaluate.zero_shot_classifier(encode, names, templates, cache_path=tmp_path / "w.npz",
                                        cache_key="model-a")
  np.testing.assert_array_equal(w, again)
  assert calls == [4]  # the second call was served from the cache
  evaluate.zero_shot_classifier(encode, names, templates, cache_path=tmp_path / "w.npz",
                                cache_key="model-b")
  assert calls == [4, 4]  # another model: recomputed


def test_zero_shot_bad_input(tmp_path):
  encode = lambda texts: np.ones((len(texts), 4))
  with pytest.raises(ValueError, match="at least one class"):
    evaluate.zero_shot_classifier(encode, [], ["a {c}"])
  with pytest.raises(ValueError, match="at least one prompt template"):
    evaluate.zero_shot_classifier(encode, ["cat"], [])
  with pytest.raises(ValueError, match="placeholder"):
    evaluate.zero_shot_classifier(encode, ["cat"], ["a photo"])
  empty = tmp_path / "t.txt"
  empty.write_text("# nothing\n\n")
  with pytest.raises(ValueError, match="no templates"):
    evaluate.load_templates(str(empty))
  with pytest.raises(ValueError, match="another model"):
    evaluate.zero_shot_metrics(np.ones((3, 5)), np.ones((4, 2)), np.zeros(3, int))


def test_standard_templates_and_names():
  assert len(evaluate.standard_templates("imagenet1k")) == 80
  assert len(evaluate.standard_templates("cifar10")) == 18
  names = evaluate.standard_classnames("imagenet1k")
  assert len(names) == 1000 and names[0] == "tench"
  assert evaluate.standard_classnames("cifar10")[0] == "airplane"


def test_official_vqa_accuracy_hand_made():
  humans = ["2", "2", "two", "2 ", "3", "3", "three", "none", "2", "many"]
  # Humans disagree, so the prediction is fully normalised ("two" -> "2"); human answers get
  # only the punctuation rule, so "two" stays "two". Four humans say "2" (after trimming): each
  # leave-one-out subset has 4 matches (3 when a "2" is left out) -> min(., 3)/3 = 1 everywhere.
  assert evaluate.official_vqa_accuracy("Two", humans) == 1.0
  # "3" matches 2 humans: leaving out one of them gives 1/3, otherwise 2/3 -> (2*1/3 + 8*2/3)/10.
  assert evaluate.official_vqa_accuracy("3", humans) == pytest.approx((2 / 3 + 16 / 3) / 10)
  assert evaluate.official_vqa_accuracy("dog", humans) == 0.0
  # Unanimous humans: no normalisation at all, so "Yes" != "yes".
  assert evaluate.official_vqa_accuracy("yes", ["yes"] * 10) == 1.0
  assert evaluate.official_vqa_accuracy("Yes", ["yes"] * 10) == 0.0
  assert evaluate.normalize_answer("The two dogs!") == "2 dogs"
  assert evaluate.normalize_answer("dont know.") == "don't know"
  assert evaluate.normalize_answer("1,000") == "1000"


def test_vqa_predict_and_accuracy():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(4, 6))
  cands = rng.normal(size=(5, 3, 6))
  q2i = np.array([0, 1, 2, 3, 0])
  cands[np.arange(5), [2, 0, 1, 1, 0]] = images[q2i] * 3  # the right candidate is the image
  chosen = evaluate.vqa_predict(images, cands, q2i)
  np.testing.assert_array_equal(chosen, [2, 0, 1, 1, 0])
  got = evaluate.vqa_accuracy(chosen, answer=np.array([2, 0, 1, 0, 0]),
                              candidates=[["red", "blue", "green"]] * 5,
                              human_answers=[["green"] * 10, ["red"] * 10, ["x"] * 10,
                                             ["blue"] * 10, ["red"] * 2 + ["x"] * 8])
  assert got["multiple_choice_accuracy"] == pytest.approx(0.8)
  # per question: 1, 1, 0, 1, and for the last "red" matches 2 humans -> (2*1/3 + 8*2/3)/10
  assert got["vqa_accuracy"] == pytest.approx((3 + (2 / 3 + 16 / 3) / 10) / 5)
  types = ["color", "count", "color", "count", "count"]  # right: 1, 1, 1, 0, 1
  by_type = evaluate.vqa_accuracy(chosen, answer=np.array([2, 0, 1, 0, 0]), question_types=types)
  assert by_type == {"multiple_choice_accuracy": pytest.approx(0.8),
                     "multiple_choice_accuracy/color": 1.0,
                     "multiple_choice_accuracy/count": pytest.approx(2 / 3)}


def test_blending():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  np.testing.assert_allclose(evaluate.blend_embeddings(a, b, 1.0), unit(a), rtol=1e-6)
  np.testing.assert_allclose(evaluate.blend_embeddings(a, b, 0.0), unit(b), rtol=1e-6)
  np.testing.assert_allclose(evaluate.blend_embeddings(a, b, 0.9),
                             unit(0.9 * unit(a) + 0.1 * unit(b)), rtol=1e-6)
  pa = {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}
  pb = {"w": np.zeros((2, 2), np.float32), "b": np.ones(2, np.float32)}
  mixed = evaluate.blend_params(pa, pb, 0.25)
  np.testing.assert_allclose(mixed["w"], 0.25)
  np.testing.assert_allclose(mixed["b"], 0.75)
  with pytest.raises(ValueError, match="beta must be in"):
    evaluate.blend_embeddings(a, b, 1.5)
  with pytest.raises(ValueError, match="same model"):
    evaluate.blend_params(pa, {"w": pb["w"]}, 0.5)
  rows = evaluate.beta_sweep(lambda beta: {"r1": beta * 2}, betas=(1.0, 0.5))
  assert rows == [{"beta": 1.0, "r1": 2.0}, {"beta": 0.5, "r1": 1.0}]
