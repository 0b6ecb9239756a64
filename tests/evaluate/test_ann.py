"""The FAISS HNSW index: recall@10 >= 0.95 against exact search on 100k clustered vectors,
with at least 10x fewer distance evaluations per query than exact search (the
machine-independent form of "10x faster"; wall-clock figures are in scripts/bench_ann.py)."""
import numpy as np
import pytest

from clipjax.evaluate.ann import AnnIndex, exact_search, recall_at_k


def clustered(n, dim=64, clusters=1000, seed=0, noise=0.6):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(clusters, dim)).astype(np.float32)
  x = centres[rng.integers(clusters, size=n)] + noise * rng.normal(size=(n, dim)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hnsw_recall_and_work_on_100k(tmp_path):
  import faiss
  gallery, queries = clustered(100_000), clustered(300, seed=1)
  # A light build (M=16, efConstruction=40: ~15 s here) and a wide search beam.
  index = AnnIndex(gallery.shape[1], model_key="test-model", m=16, ef_construction=40)
  index.add(gallery, [f"img{i}" for i in range(len(gallery))])
  index.save(str(tmp_path / "idx"))
  loaded = AnnIndex.load(str(tmp_path / "idx"))
  faiss.cvar.hnsw_stats.reset()
  _, approx = loaded.search(queries, k=10, ef_search=1024, model_key="test-model")
  distances_per_query = faiss.cvar.hnsw_stats.ndis / len(queries)
  exact = exact_search(gallery, queries, 10)
  recall = recall_at_k(approx, exact)
  assert recall >= 0.95, recall
  assert distances_per_query * 10 <= len(gallery), distances_per_query
  assert loaded.items[approx[0, 0]] == f"img{approx[0, 0]}"


def test_exact_search_reference():
  g, q = clustered(500, dim=8, clusters=20), clustered(7, dim=8, clusters=20, seed=3)
  ref = np.argsort(-(q.astype(np.float64) @ g.T.astype(np.float64)), axis=1)[:, :5]
  np.testing.assert_array_equal(exact_search(g, q, 5), ref)


def test_index_bad_input(tmp_path):
  index = AnnIndex(8, model_key="model-a")
  with pytest.raises(ValueError, match="empty"):
    index.search(np.ones((1, 8)), k=1)
  index.add(clustered(20, dim=8, clusters=4), [str(i) for i in range(20)])
  with pytest.raises(ValueError, match="built with model model-a"):
    index.search(np.ones((1, 8)), k=1, model_key="model-b")
  with pytest.raises(ValueError, match="size 4"):
    index.search(np.ones((1, 4)), k=1)
  with pytest.raises(ValueError, match="8-d embeddings"):
    index.add(np.ones((2, 4)), ["a", "b"])
  with pytest.raises(FileNotFoundError, match="not a clipjax index"):
    AnnIndex.load(str(tmp_path))
