r"""ANN (FAISS HNSW) vs exact search on clustered unit vectors: recall@10 and queries/s.

  python scripts/bench_ann.py [--n=100000] [--dim=64] [--queries=1000]

Exact search is the brute-force inner product (FAISS IndexFlatIP, BLAS), the reference the
index must approach; the printed ratio is ANN queries/s over exact queries/s.
"""
import time

from absl import flags

from clipjax import cli

flags.DEFINE_integer("n", 100_000, "Gallery size.")
flags.DEFINE_integer("dim", 64, "Embedding size.")
flags.DEFINE_integer("queries", 1000, "Number of queries.")
flags.DEFINE_integer("m", 16, "HNSW M.")
flags.DEFINE_integer("ef_construction", 40, "HNSW efConstruction.")
flags.DEFINE_multi_integer("ef_search", [32, 64, 128, 256], "HNSW efSearch values.")
FLAGS = flags.FLAGS


def clustered(n, dim, seed, clusters=1000, noise=0.6):
  import numpy as np

  from clipjax.evaluate.embed import unit_rows
  rng = np.random.default_rng(seed)
  centres = np.random.default_rng(0).normal(size=(clusters, dim)).astype(np.float32)
  x = centres[rng.integers(clusters, size=n)] + noise * rng.normal(size=(n, dim)).astype(np.float32)
  return unit_rows(x)


def main(argv):
  del argv
  import faiss

  from clipjax.evaluate.ann import AnnIndex, recall_at_k
  gallery, queries = clustered(FLAGS.n, FLAGS.dim, 1), clustered(FLAGS.queries, FLAGS.dim, 2)
  flat = faiss.IndexFlatIP(FLAGS.dim)
  flat.add(gallery)
  start = time.perf_counter()
  _, exact = flat.search(queries, 10)
  exact_qps = FLAGS.queries / (time.perf_counter() - start)
  start = time.perf_counter()
  index = AnnIndex(FLAGS.dim, "bench", m=FLAGS.m, ef_construction=FLAGS.ef_construction)
  index.add(gallery, [""] * FLAGS.n)
  build = time.perf_counter() - start
  print(f"n={FLAGS.n} dim={FLAGS.dim} queries={FLAGS.queries}; HNSW M={FLAGS.m} "
        f"efConstruction={FLAGS.ef_construction} built in {build:.1f} s; "
        f"{faiss.omp_get_max_threads()} threads")
  print(f"{'method':>18} {'recall@10':>10} {'queries/s':>10} {'vs exact':>9}")
  print(f"{'exact (FlatIP)':>18} {1.0:10.3f} {exact_qps:10.0f} {1.0:8.2f}x")
  for ef in FLAGS.ef_search:
    index.search(queries[:10], k=10, ef_search=ef)  # warm-up
    start = time.perf_counter()
    _, approx = index.search(queries, k=10, ef_search=ef)
    qps = FLAGS.queries / (time.perf_counter() - start)
    print(f"{'HNSW ef=' + str(ef):>18} {recall_at_k(approx, exact):10.3f} {qps:10.0f} "
          f"{qps / exact_qps:8.2f}x")


if __name__ == "__main__":
  cli.run(main)
