r"""How fast the embedded synthetic dataset generates: N samples at a resolution, one process.

  python scripts/bench_synthetic.py [--n=100000] [--resolution=64]

Target (Data issue): 100,000 samples at 64x64 in under 2 minutes on the project machine.
"""
import time

from absl import flags

from clipjax import cli

flags.DEFINE_integer("n", 100_000, "Samples to generate.")
flags.DEFINE_integer("resolution", 64, "Image side in pixels.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from clipjax.data.synthetic import SyntheticScenes
  ds = SyntheticScenes(FLAGS.n, FLAGS.resolution)
  start = time.perf_counter()
  for i in range(FLAGS.n):
    ds[i]
  seconds = time.perf_counter() - start
  print(f"{FLAGS.n} samples at {FLAGS.resolution}x{FLAGS.resolution}: {seconds:.1f} s "
        f"({FLAGS.n / seconds:.0f} samples/s, one process)")


if __name__ == "__main__":
  cli.run(main)
