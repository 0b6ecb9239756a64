r"""Convert CLIP weights between OpenCLIP, clipjax and Hugging Face formats.

  # OpenCLIP checkpoint (.safetensors / .pt / .bin, raw or training checkpoint) -> HF CLIPModel
  python scripts/convert.py --input=epoch_32.pt --arch=ViT-B-32 --to=hf --output=out/hf_clip
  # -> open_clip state_dict (.safetensors or .pt), e.g. to re-save a training checkpoint
  python scripts/convert.py --input=epoch_32.pt --to=openclip --output=out/model.safetensors
  # published weights by name (from the Hugging Face cache; downloaded only when online)
  python scripts/convert.py --input=ViT-B-32 --pretrained=laion2b_s34b_b79k --to=hf --output=out/hf
  # longer text context (positional embeddings interpolated from 77); writes out/model.json too
  python scripts/convert.py --input=model.safetensors --context_length=248 --to=openclip \
      --output=out/model.safetensors

`--input` takes every name `clipjax.load_openclip` takes (a file, a directory, hf-hub:ORG/REPO,
local-dir:DIR, or an architecture with --pretrained). The architecture comes from, in order:
`--arch`, the name (tag, hub config), the JSON next to the file (clipjax's `<stem>.json` or
open_clip's `open_clip_config.json`), or the tensor shapes; ambiguous or unmatched shapes are
an error listing the candidates, never a guess.
"""
from absl import flags

from clipjax import cli

flags.DEFINE_string("input", None, "Weights: a file, directory, hf-hub:ORG/REPO, local-dir:DIR "
                    "or an architecture name with --pretrained.")
flags.DEFINE_string("pretrained", None, "open_clip pretrained tag (or file) for an "
                    "architecture name given as --input.")
flags.DEFINE_string("arch", None, "open_clip architecture name or model JSON; by default from "
                    "the input (see above).")
flags.DEFINE_integer("context_length", None, "Text context of the output (interpolated).")
flags.DEFINE_enum("to", "openclip", ["openclip", "hf"], "Output format.")
flags.DEFINE_string("output", None, "Output file (.safetensors/.pt) for openclip, folder for hf.")
flags.mark_flags_as_required(["input", "output"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from clipjax.convert.hf import export_hf
  from clipjax.convert.load import load_checkpoint
  from clipjax.convert.openclip import export_openclip, pytorch_load_line
  cfg, params, resolved = load_checkpoint(FLAGS.input, FLAGS.pretrained, arch=FLAGS.arch,
                                          context_length=FLAGS.context_length)
  print(f"read {resolved.description}", flush=True)
  if FLAGS.to == "hf":
    out = export_hf(params, cfg, FLAGS.output)
    print(f"wrote {out}\nload in PyTorch:\n  from transformers import CLIPModel, CLIPProcessor; "
          f"model = CLIPModel.from_pretrained({str(out)!r}); "
          f"processor = CLIPProcessor.from_pretrained({str(out)!r})")
  else:
    export_openclip(params, cfg, FLAGS.output)
    print(f"wrote {FLAGS.output}\nload in PyTorch:\n  {pytorch_load_line(FLAGS.output, cfg)}")


if __name__ == "__main__":
  cli.run(main)
