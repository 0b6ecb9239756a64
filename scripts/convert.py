r"""Convert CLIP weights between OpenCLIP, clipjax and Hugging Face formats.

  # OpenCLIP checkpoint (.safetensors / .pt / .bin, raw or training checkpoint) -> HF CLIPModel
  python scripts/convert.py --input=epoch_32.pt --arch=ViT-B-32 --to=hf --output=out/hf_clip
  # -> open_clip state_dict (.safetensors or .pt), e.g. to re-save a training checkpoint
  python scripts/convert.py --input=epoch_32.pt --to=openclip --output=out/model.safetensors
  # longer text context (positional embeddings interpolated from 77); writes out/model.json too
  python scripts/convert.py --input=model.safetensors --context_length=248 --to=openclip \
      --output=out/model.safetensors

`--arch` is optional: without it the architecture is inferred from tensor shapes (pass the
`-quickgelu` name for OpenAI-trained weights, which shapes cannot tell apart).
"""
from absl import app, flags, logging

flags.DEFINE_string("input", None, "OpenCLIP checkpoint: .safetensors, .pt, .bin or .pth.")
flags.DEFINE_string("arch", None, "open_clip architecture name; inferred from shapes if unset.")
flags.DEFINE_integer("context_length", None, "Text context of the output (interpolated).")
flags.DEFINE_enum("to", "openclip", ["openclip", "hf"], "Output format.")
flags.DEFINE_string("output", None, "Output file (.safetensors/.pt) for openclip, folder for hf.")
flags.mark_flags_as_required(["input", "output"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from clipjax.convert.hf import export_hf
  from clipjax.convert.openclip import export_openclip, load_openclip
  model, params = load_openclip(FLAGS.input, FLAGS.arch, context_length=FLAGS.context_length)
  arch = FLAGS.arch or model.cfg
  if FLAGS.to == "hf":
    out = export_hf(params, arch, FLAGS.output)
  else:
    out = export_openclip(params, arch, FLAGS.output)
  logging.info("wrote %s", out)
  print(out)


if __name__ == "__main__":
  app.run(main)
