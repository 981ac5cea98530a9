"""A TFDS dataset faked as prepared in a data_dir, for offline tests.

Only `tfds.testing.mock_data(policy=USE_FILES)` with real metadata written into the data_dir
works offline in TFDS 4.9.10: AUTO/USE_CODE know no split sizes.
"""

import contextlib
import os

import tensorflow_datasets as tfds


@contextlib.contextmanager
def prepared(name, data_dir, num_examples):
  """Fake prepared `name` in data_dir: real metadata from code, random examples from the mock."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  template = tfds.core.ShardedFileTemplate(
      data_dir=builder.data_dir, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      dataset_name=builder.name, filetype_suffix="tfrecord")
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=s, shard_lengths=[num_examples], num_bytes=0,
                          filename_template=template) for s in ("train", "test")]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)
  with tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(data_dir)):
    yield
