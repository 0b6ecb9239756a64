"""One host of a two-host frozen-cache build (launched by test_frozen_cache.py): 1 CPU device,
jax.distributed over localhost with gloo. Builds the image table of 64 synthetic scenes in
parts of 16 into WORKDIR, then prints every id's row as the data workers read it."""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from etils import epath  # noqa: E402

import clipjax  # noqa: E402
from clipjax.data.synthetic import SyntheticScenes  # noqa: E402
from clipjax.data.views import CachedInputs  # noqa: E402
from clipjax.parallel.mesh import initialize_distributed  # noqa: E402
from clipjax.train.frozen_cache import build_image_cache  # noqa: E402

SPEC = {"kind": "synthetic", "size": 64, "resolution": 32, "seed": 0}


def main():
  port, process_id, workdir = sys.argv[1], int(sys.argv[2]), epath.Path(sys.argv[3])
  initialize_distributed(f"localhost:{port}", num_processes=2, process_id=process_id)
  logging.set_verbosity(logging.INFO)
  model, params = clipjax.create_model("ViT-T-16-test")
  source = SyntheticScenes(64, resolution=32, seed=0)
  table = build_image_cache(model, params, source, SPEC, workdir, num_workers=0, batch_size=8,
                            part_size=16)
  cached = CachedInputs(source, table)
  rows = np.stack([cached[i]["image_embedding"] for i in range(len(source))])
  np.save(workdir / f"rows-{process_id}.npy", rows)
  print("DONE", len(table))


if __name__ == "__main__":
  main()
