r"""Write any clipjax source into array_record shards for fast random access.

  python scripts/convert_to_array_record.py --source=manifest --input=data/manifest.jsonl \
      --output='out/train-{shard:05d}-of-{num_shards:05d}.array_record' --num_shards=8
  python scripts/convert_to_array_record.py --source=coco --input=captions_train2017.json \
      --images=train2017/ --output='out/coco-{shard:05d}.array_record'
  python scripts/convert_to_array_record.py --source=webdataset --input='shards/*.tar' --output=...
  python scripts/convert_to_array_record.py --source=synthetic --n=100000 --output=...

Read back with `clipjax.data.array_record.ArrayRecordSource(paths)`. Bad records are counted
and reported, not written.
"""
from absl import app, flags

from clipjax import cli

flags.DEFINE_enum("source", "manifest", ["manifest", "coco", "webdataset", "synthetic"], "Input kind.")
flags.DEFINE_string("input", None, "Manifest, COCO captions JSON, or tar glob.")
flags.DEFINE_string("images", None, "Image folder (coco; manifest default: its folder).")
flags.DEFINE_integer("n", 10_000, "Samples (synthetic).")
flags.DEFINE_integer("resolution", 64, "Image size (synthetic).")
flags.DEFINE_string("output", None, "Output pattern with {shard} and optionally {num_shards}.")
flags.DEFINE_integer("num_shards", 1, "Number of output files.")
flags.mark_flag_as_required("output")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from tqdm import tqdm

  from clipjax.data.array_record import write_array_record
  from clipjax.data.builder import make_source
  from clipjax.data.synthetic import SyntheticScenes
  if FLAGS.source == "synthetic":
    source = SyntheticScenes(FLAGS.n, FLAGS.resolution)
  elif FLAGS.input is None:
    raise app.UsageError(f"--input is required for --source={FLAGS.source}")
  elif FLAGS.source == "manifest":
    source = make_source({"kind": "manifest", "manifest": FLAGS.input, "image_root": FLAGS.images})
  elif FLAGS.source == "coco":
    source = make_source({"kind": "coco", "annotations": FLAGS.input, "image_root": FLAGS.images})
  else:
    source = make_source({"kind": "wds", "shards": FLAGS.input})
  bar = tqdm(total=len(source), unit="record", desc="array_record")
  paths, skipped = write_array_record(source, FLAGS.output, FLAGS.num_shards,
                                      progress=lambda _: bar.update())
  bar.close()
  print(f"wrote {len(paths)} shard(s): {paths[0]}{' ...' if len(paths) > 1 else ''}")
  print(f"skipped: {skipped or 'none'}")


if __name__ == "__main__":
  cli.run(main)
