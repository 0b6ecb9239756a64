"""The event writer against tensorboard's own reader, which checks every record's CRC-32C."""
import numpy as np
import pytest

from clipjax.train.events import EventWriter, crc32c


def test_crc32c_matches_the_standard_check_value_and_tensorboards():
  from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as reference
  assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)
  data = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
  for n in (0, 1, 7, 1000):
    assert crc32c(data[:n]) == reference(data[:n])


def test_scalars_read_back_with_tensorboard(tmp_path):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  values = {s: {"train/loss": 10.0 / s, "train/lr": 1e-4 * s, "train/neg": -s}
            for s in (1, 2, 300, 2**40)}  # multi-byte varints, a step past int32
  writer = EventWriter(tmp_path / "tb")
  for step, row in values.items():
    writer.scalars(step, row)
  writer.close()
  second = EventWriter(tmp_path / "tb")  # a resumed run: a second file, both read
  second.scalars(2**40 + 1, {"train/loss": 0.5})
  second.close()
  events = EventAccumulator(str(tmp_path / "tb"))
  events.Reload()
  assert set(events.Tags()["scalars"]) == {"train/loss", "train/lr", "train/neg"}
  loss = events.Scalars("train/loss")
  assert [e.step for e in loss] == [*values, 2**40 + 1]
  for tag in ("train/loss", "train/lr", "train/neg"):
    got = [e.value for e in events.Scalars(tag)][:len(values)]
    want = [row[tag] for row in values.values()]
    np.testing.assert_allclose(got, np.float32(want), rtol=0)  # stored as float32, exactly
  assert loss[-1].value == pytest.approx(0.5)
