"""End to end: evaluation tasks on sources with a real (tiny) clipjax model, the
`python -m clipjax.evaluate` CLI, and the `python -m clipjax.search` CLI on real photos."""
import json
import os
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image
from conftest import REPO, xla_flags

import clipjax
from clipjax.data.synthetic import SyntheticScenes
from clipjax.evaluate.tasks import EvalRun, eval_options
from clipjax.evaluate.tasks.retrieval import retrieval
from clipjax.evaluate.tasks.vqa import vqa
from clipjax.evaluate.embed import clip_encoders
from clipjax.evaluate.runner import run_evaluation


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1), PYTHONPATH=str(REPO))


@pytest.fixture(scope="module")
def two_models():
  model, base = clipjax.create_model("ViT-T-16-test", seed=0)
  _, other = clipjax.create_model("ViT-T-16-test", seed=1)
  other = dict(other, visual=base["visual"])  # an adapted text tower, the same image tower
  return clip_encoders(model, base), clip_encoders(model, other)


def _synthetic(size, split="eval"):
  return dict(kind="synthetic", size=size, resolution=32, seed=0, split=split)


def test_run_evaluation_tasks_and_blend_sweep(two_models, tmp_path):
  base, other = two_models
  cfg = ml_collections.ConfigDict(dict(
      batch_size=16, num_workers=0, betas=[1.0, 0.5, 0.0],
      retrieval=dict(source=_synthetic(24)),
      zeroshot=dict(source=_synthetic(24), classnames="source", templates="synthetic"),
      vqa=dict(source=_synthetic(12, "vqa"))))
  res = run_evaluation(eval_options(cfg), {"base": base, "other": other}, str(tmp_path),
                       blend=("base", "other"))
  sweep = res["retrieval"]["blend"]["sweep"]
  # β = 1 is the original tower alone, β = 0 the adapted one alone.
  assert {k: v for k, v in sweep[0].items() if k != "beta"} == res["retrieval"]["base"]["metrics"]
  assert {k: v for k, v in sweep[-1].items() if k != "beta"} == res["retrieval"]["other"]["metrics"]
  vqa_sweep = res["vqa"]["blend"]["sweep"]
  assert vqa_sweep[0]["multiple_choice_accuracy"] == res["vqa"]["base"]["metrics"][
      "multiple_choice_accuracy"]
  assert res["retrieval"]["base"]["num_texts"] == 24
  assert set(res["zeroshot"]["base"]["metrics"]) == {"top1", "top5", "mean_per_class_recall"}
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["vqa"]["base"]["num_questions"] == 12
  for png in ("retrieval_beta_sweep.png", "vqa_beta_sweep.png", "zeroshot_per_class_base.png"):
    assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
  assert list((tmp_path / "cache").glob("zeroshot-*.npz"))  # text embeddings cached


def test_text_pairs_equals_float64_reference(two_models, tmp_path):
  """text_pairs through run_evaluation: each caption ranks its paraphrase among all
  paraphrases and hard negatives; checked against ranks counted in float64 NumPy on the same
  model's embeddings. A random model scores many texts within float32 rounding of each other,
  so the reference gives each query a rank interval: wrong items above the positive by more
  than 1e-6 (lowest rank) or by more than -1e-6 (highest rank)."""
  base, _ = two_models
  cfg = ml_collections.ConfigDict(dict(tasks="text_pairs", batch_size=16, num_workers=0,
                                       text_pairs=dict(source=_synthetic(40))))
  res = run_evaluation(eval_options(cfg), {"base": base}, str(tmp_path))["text_pairs"]["base"]
  scenes = SyntheticScenes(40, 32, seed=0, split="eval")
  records = [scenes[i] for i in range(40)]
  q = base.encode_texts([r["caption"] for r in records]).astype(np.float64)
  g = base.encode_texts([r["paraphrase"] for r in records]
                        + [r["hard_negative"] for r in records]).astype(np.float64)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  g /= np.linalg.norm(g, axis=1, keepdims=True)
  scores = q @ g.T
  positive = scores[np.arange(40), np.arange(40)][:, None]
  wrong = np.ones_like(scores, bool)
  wrong[np.arange(40), np.arange(40)] = False
  best = 1 + np.sum(wrong & (scores > positive + 1e-6), axis=1)
  worst = 1 + np.sum(wrong & (scores > positive - 1e-6), axis=1)
  assert res["num_queries"] == 40 and res["num_gallery"] == 80 and res["skipped"] == {}
  for k in (1, 5, 10):
    assert np.mean(worst <= k) <= res["metrics"][f"recall@{k}"] <= np.mean(best <= k)
  assert np.mean(1 / worst) - 1e-9 <= res["metrics"]["mrr"] <= np.mean(1 / best) + 1e-9
  assert np.mean(1 / worst) > 0.5 * np.mean(1 / best)  # the interval is informative
  assert 0 < res["metrics"]["mrr"] < 1  # a random model: neither perfect nor hopeless


def test_retrieval_on_coco_groups_captions_and_counts_bad_images(two_models, coco_sample,
                                                                 tmp_path):
  from clipjax.data.sources import CocoCaptionsSource
  images = tmp_path / "images"
  shutil.copytree(coco_sample / "images", images)
  data = json.loads((coco_sample / "captions_coco_format.json").read_text())
  broken = data["images"][0]["file_name"]
  (images / broken).write_bytes(b"not a jpeg")
  source = CocoCaptionsSource(str(coco_sample / "captions_coco_format.json"), str(images))
  res = retrieval([two_models[0]], source, EvalRun("", batch_size=8, num_workers=2))
  n_img = len(data["images"])
  n_cap_broken = sum(a["image_id"] == data["images"][0]["id"] for a in data["annotations"])
  assert res["num_images"] == n_img - 1
  assert res["num_texts"] == len(data["annotations"]) - n_cap_broken
  assert res["skipped"] == {"corrupt_image": 1}


def test_evaluate_cli_weight_blending(tmp_path):
  _, params = clipjax.create_model("ViT-T-16-test", seed=0)
  _, adapted = clipjax.create_model("ViT-T-16-test", seed=1)
  clipjax.export_openclip(params, "ViT-T-16-test", str(tmp_path / "base.safetensors"))
  clipjax.export_openclip(adapted, "ViT-T-16-test", str(tmp_path / "adapted.safetensors"))
  out = subprocess.run(
      [sys.executable, "-m", "clipjax.evaluate", f"--config={REPO}/configs/eval.py",
       f"--workdir={tmp_path}/out", "--config.model.arch=ViT-T-16-test",
       f"--config.model.checkpoint={tmp_path}/base.safetensors",
       f"--config.model.adapted={tmp_path}/adapted.safetensors", "--config.model.blend=weights",
       "--config.eval.betas=(1.0,0.0)", "--config.eval.num_workers=0",
       "--config.eval.tasks=retrieval",
       "--config.eval.retrieval.source.size=16", "--config.eval.retrieval.source.resolution=32"],
      env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.loads((tmp_path / "out/results.json").read_text())["retrieval"]
  # WiSE-FT at β = 1 is the base model, at β = 0 the adapted one.
  assert res["wise_beta=1.0"]["metrics"] == res["base"]["metrics"]
  assert res["wise_beta=0.0"]["metrics"] == res["adapted"]["metrics"]
  assert "image_retrieval_recall@1" in out.stdout


def test_evaluate_cli_rejects_unknown_field(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "clipjax.evaluate", f"--config={REPO}/configs/eval.py",
       f"--workdir={tmp_path}", "--config.eval.no_such_field=1"],
      env=_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and "no_such_field" in out.stderr and "Traceback" not in out.stderr


def test_search_cli_on_photos(coco_sample, tmp_path):
  photos = tmp_path / "photos"
  shutil.copytree(coco_sample / "images", photos)
  (photos / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
  _, params = clipjax.create_model("ViT-T-16-test", seed=0)
  weights = tmp_path / "tiny.safetensors"  # the architecture comes from tiny.json next to it
  clipjax.export_openclip(params, "ViT-T-16-test", str(weights))
  # Paths as a user types them: `~` is expanded by clipjax (a shell leaves `--x=~/a` alone).
  env, cwd = dict(_env(), HOME=str(tmp_path)), tmp_path / "cwd"
  cwd.mkdir()
  common = [sys.executable, "-m", "clipjax.search", "--index=~/index"]
  built = subprocess.run(common + ["--images=~/photos", "--num_workers=2",
                                   f"--checkpoint={weights}"], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=600)
  assert built.returncode == 0, built.stderr[-3000:]
  n = len(list((coco_sample / "images").iterdir()))
  assert f"indexed {n} images" in built.stdout and "skipped 1 unreadable" in built.stdout
  for noise in ("faiss", "leaked shared_memory", "tpu"):  # quiet on CPU
    assert noise not in built.stderr.lower(), built.stderr[-3000:]
  assert not (cwd / "~").exists()
  meta = json.loads((tmp_path / "index/meta.json").read_text())
  assert meta["model_name"] == str(weights)
  found = subprocess.run(common + ["--query=a red car", "--k=3", f"--checkpoint={weights}"],
                         env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
  assert found.returncode == 0, found.stderr[-3000:]
  lines = [l for l in found.stdout.splitlines() if l.startswith("  ")]
  assert len(lines) == 3 and all(str(photos) in l for l in lines)
  other = subprocess.run(common + ["--arch=ViT-S-16-tiny", "--query=a red car"], env=env,
                         capture_output=True, text=True, timeout=300)
  assert other.returncode == 2 and "Traceback" not in other.stderr, other.stderr[-3000:]
  assert f"built with model {weights}" in other.stderr and "random ViT-S-16-tiny" in other.stderr
  missing = subprocess.run(common[:-1] + [f"--index={tmp_path}/nope", "--query=x"], env=_env(),
                           capture_output=True, text=True, timeout=300)
  assert missing.returncode == 2 and "not a clipjax index" in missing.stderr
  assert "Traceback" not in missing.stderr


def test_vqav1_files_end_to_end(two_models, tmp_path):
  """VQA v1 multiple-choice JSON + an image folder: records, MC accuracy and the official
  accuracy from the ten human answers, against a direct computation on the same embeddings."""
  from PIL import Image

  from clipjax.data.sources import VQAv1Source
  from clipjax.evaluate import official_vqa_accuracy, vqa_predict
  rng = np.random.default_rng(0)
  for image_id in (7, 9):
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
        tmp_path / f"COCO_val2014_{image_id:012d}.jpg")
  choices = ["red", "blue", "two", "3", "yes", "no"]
  questions = [dict(question_id=i, image_id=(7, 9, 7)[i], question=q, multiple_choices=choices)
               for i, q in enumerate(["What color?", "How many?", "Is it day?"])]
  humans = [["red"] * 6 + ["blue"] * 4, ["2"] * 5 + ["two"] * 2 + ["3"] * 3, ["yes"] * 10]
  annotations = [dict(question_id=i, image_id=q["image_id"], multiple_choice_answer=h[0],
                      answers=[{"answer": a, "answer_id": j + 1} for j, a in enumerate(h)])
                 for i, (q, h) in enumerate(zip(questions, humans))]
  (tmp_path / "q.json").write_text(json.dumps({"questions": questions}))
  (tmp_path / "a.json").write_text(json.dumps({"annotations": annotations}))
  source = VQAv1Source(str(tmp_path / "q.json"), str(tmp_path), str(tmp_path / "a.json"))
  assert source[0]["candidate_texts"][0] == "Q: What color? A: red"
  assert source[1]["answer"] == -1  # "2" is not among the choices
  res = vqa([two_models[0]], source, EvalRun("", batch_size=4, num_workers=0))
  assert res["num_questions"] == 3 and "multiple_choice_accuracy" not in res["metrics"]
  enc = two_models[0]
  images = {}
  for i in range(3):
    r = source[i]
    if r["image_id"] not in images:
      from clipjax.data.transforms import image_transform
      images[r["image_id"]] = enc.encode_images(image_transform(enc.image_size)(Image.open(r["image"]))[None])[0]
  keys = sorted(images)
  cands = np.stack([enc.encode_texts(source[i]["candidate_texts"]) for i in range(3)])
  chosen = vqa_predict(np.stack([images[k] for k in keys]), cands,
                       np.array([keys.index(source[i]["image_id"]) for i in range(3)]))
  expected = np.mean([official_vqa_accuracy(choices[c], h) for c, h in zip(chosen, humans)])
  assert res["metrics"]["vqa_accuracy"] == pytest.approx(expected, abs=1e-9)
  with pytest.raises(FileNotFoundError, match="questions file"):
    VQAv1Source(str(tmp_path / "missing.json"), str(tmp_path))


def test_zeroshot_on_a_class_folder_equals_a_float64_reference(two_models, coco_sample,
                                                              tmp_path):
  """`folder:root=DIR` of class folders: class names from the folder names, labels from the
  tree; top-1 and per-class recall against float64 NumPy on the same encoders' embeddings."""
  from clipjax.data.transforms import image_transform
  base, _ = two_models
  photos = sorted((coco_sample / "images").glob("*.jpg"))[:9]
  classes = ["golden_retriever", "red_car", "teddy_bear"]
  for k, photo in enumerate(photos):
    (tmp_path / "classes" / classes[k % 3]).mkdir(parents=True, exist_ok=True)
    shutil.copy(photo, tmp_path / "classes" / classes[k % 3] / photo.name)
  templates = ["a photo of a {c}.", "a blurry photo of a {c}."]
  (tmp_path / "templates.txt").write_text("\n".join(templates))
  cfg = ml_collections.ConfigDict(dict(
      tasks="zeroshot", batch_size=4, num_workers=0,
      zeroshot=dict(source=f"folder:root={tmp_path}/classes", classnames="source",
                    templates=str(tmp_path / "templates.txt"))))
  res = run_evaluation(eval_options(cfg), {"base": base}, str(tmp_path / "out"))
  res = res["zeroshot"]["base"]
  names = ["golden retriever", "red car", "teddy bear"]
  weights = np.stack([np.mean([_unit64(base.encode_texts([t.replace("{c}", n)]))[0]
                               for t in templates], axis=0) for n in names])
  weights = _unit64(weights)
  transform = image_transform(base.image_size, train=False, uint8=True)
  labels, images = [], []
  for c, name in enumerate(classes):
    for photo in sorted((tmp_path / "classes" / name).iterdir()):
      labels.append(c)
      images.append(transform(Image.open(photo).convert("RGB")))
  predictions = (_unit64(base.encode_images(np.stack(images))) @ weights.T).argmax(1)
  labels = np.array(labels)
  assert res["metrics"]["top1"] == pytest.approx(np.mean(predictions == labels), abs=1e-9)
  # Per class, by name: a random model predicts few classes, so this pins the label mapping.
  assert res["per_class_recall"] == {n: pytest.approx(np.mean(predictions[labels == c] == c))
                                     for c, n in enumerate(names)}


def _unit64(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def alignment_task():
  """A task defined here, in one class: the mean cosine of each image with its own caption.
  Registered for one test only (the registry is process-wide)."""
  from clipjax.evaluate.tasks import Task, register
  from clipjax.evaluate.tasks.base import _REGISTRY, cached_images

  @register
  class Alignment(Task):
    name = "alignment"
    settings = {"text_field": "caption"}
    default = False
    headline = (("mean_cosine", "align"),)

    def evaluate(self, encoders, source, cfg, run, model_name):
      images = cached_images(encoders, source, run)
      texts = encoders.encode_texts([source[int(i)][cfg.text_field] for i in images["index"]])
      cosine = np.sum(images["embeddings"] * texts, axis=1)
      return {"metrics": {"mean_cosine": float(np.mean(cosine))}, "skipped": {}}

  yield Alignment
  del _REGISTRY["alignment"]


def test_a_task_defined_in_one_class_runs_everywhere(alignment_task, two_models, tmp_path):
  """Adding a task is its class: eval.tasks accepts it (with its block from eval_block),
  run_evaluation runs it, and the study's headline columns list it; checked against a
  float64 NumPy cosine of the same model's embeddings (rtol 1e-5)."""
  from clipjax.errors import ConfigError
  from clipjax.evaluate.tasks import eval_block, eval_tasks
  cfg = ml_collections.ConfigDict(eval_block(16, "retrieval,alignment"))
  assert cfg.alignment.text_field == "caption" and "alignment" not in eval_block()["tasks"]
  cfg.num_workers, cfg.batch_size = 0, 8
  cfg.alignment.source = cfg.retrieval.source = _synthetic(16)
  assert [t.name for t in eval_tasks(eval_options(cfg))] == ["retrieval", "alignment"]
  base, _ = two_models
  got = run_evaluation(eval_options(cfg), {"base": base}, str(tmp_path))
  got = got["alignment"]["base"]["metrics"]
  scenes = SyntheticScenes(16, 32, seed=0, split="eval")
  images = np.stack([scenes[i]["image"] for i in range(16)])
  i = np.asarray(base.encode_images(images), np.float64)
  t = np.asarray(base.encode_texts([scenes[k]["caption"] for k in range(16)]), np.float64)
  i /= np.linalg.norm(i, axis=1, keepdims=True)
  t /= np.linalg.norm(t, axis=1, keepdims=True)
  np.testing.assert_allclose(got["mean_cosine"], np.mean(np.sum(i * t, axis=1)), rtol=1e-5)
  with pytest.raises(ConfigError, match="unknown task 'alignmnet' .*did you mean 'alignment'"):
    eval_options(ml_collections.ConfigDict(dict(eval_block(16), tasks="alignmnet")))
  from clipjax.study.report import headline
  assert ("alignment/mean_cosine", "align") in headline()
