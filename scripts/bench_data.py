r"""Input pipeline throughput: clipjax (grain, 2 worker processes) vs open_clip's data path (its
train transform and tokenizer in a torch DataLoader with 2 workers), same JPEG files, one run.

  python scripts/bench_data.py [--n=1024] [--batch=64] [--repeats=3]

Writes --n 256x256 JPEG scenes with captions to a temporary folder, then times decode + train
augmentation (RandomResizedCrop 224, bicubic) + tokenisation + batching for both.
"""
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import flags

from clipjax import cli

flags.DEFINE_integer("n", 1024, "Number of images.")
flags.DEFINE_integer("batch", 64, "Batch size.")
flags.DEFINE_integer("workers", 2, "Worker processes for both pipelines.")
flags.DEFINE_integer("repeats", 3, "Interleaved runs per row; the median is reported.")
FLAGS = flags.FLAGS


class OpenClipDataset:
  """torch-style dataset: PIL decode, open_clip's train transform, open_clip's tokenizer."""

  def __init__(self, rows, root):
    import open_clip
    self.rows, self.root = rows, root
    self.transform = open_clip.image_transform(224, is_train=True)
    self.tokenizer = open_clip.get_tokenizer("ViT-B-32")

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, i):
    from PIL import Image
    row = self.rows[i]
    return self.transform(Image.open(self.root / row["image"])), self.tokenizer(row["caption"])[0]


def _time_batches(iterator, batches: int) -> float:
  next(iterator)  # start-up (worker spawn) is not throughput
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return time.perf_counter() - start


def main(argv):
  del argv
  import torch
  from PIL import Image

  from clipjax.data.pipeline import PrepareExample, build_dataset
  from clipjax.data.manifest import ManifestSource
  from clipjax.data.synthetic import SyntheticScenes

  root = Path(tempfile.mkdtemp(prefix="bench_data_"))
  scenes = SyntheticScenes(FLAGS.n, 256, seed=5)
  rows = []
  for i in range(FLAGS.n):
    r = scenes[i]
    Image.fromarray(r["image"]).save(root / f"{i:06d}.jpg", quality=90)
    rows.append({"image": f"{i:06d}.jpg", "caption": r["caption"]})
  (root / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  batches = FLAGS.n // FLAGS.batch - 2

  def clipjax_run(read_threads):
    ds = build_dataset(ManifestSource(str(root / "manifest.jsonl")),
                       PrepareExample(224, train=True), batch_size=FLAGS.batch, seed=0,
                       num_workers=FLAGS.workers, process_index=0, process_count=1,
                       read_threads=read_threads)
    it = iter(ds)
    try:
      return _time_batches(it, batches)
    finally:
      it.close()

  def open_clip_run():
    loader = torch.utils.data.DataLoader(OpenClipDataset(rows, root), batch_size=FLAGS.batch,
                                         shuffle=True, num_workers=FLAGS.workers, drop_last=True)
    return _time_batches(iter(loader), batches)

  rows_to_time = {
      "clipjax grain (default: no read threads in workers)": lambda: clipjax_run(None),
      "clipjax grain, grain's default 16 read threads": lambda: clipjax_run(16),
      "open_clip DataLoader": open_clip_run,
  }
  seconds = {name: [] for name in rows_to_time}
  for _ in range(FLAGS.repeats):  # interleaved, so load changes on the machine hit every row
    for name, run in rows_to_time.items():
      seconds[name].append(run())
  n_images = batches * FLAGS.batch
  ref = float(np.median(seconds["open_clip DataLoader"]))
  print(f"{n_images} images (256x256 JPEG -> 224 train crop + tokens), batch {FLAGS.batch}, "
        f"{FLAGS.workers} workers each, median of {FLAGS.repeats} interleaved runs")
  for name, times in seconds.items():
    t = float(np.median(times))
    print(f"{name:55s} {n_images / t:8.1f} images/s   {ref / t:.2f}x")

if __name__ == "__main__":
  cli.run(main)
