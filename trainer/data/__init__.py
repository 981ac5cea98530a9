"""Input pipelines: any TFDS image-classification dataset, offline `digits`, `synthetic`.

Batch units: `global_batch_size` is summed over all replicas; every replica receives
per-replica batches of global_batch_size / num_replicas_in_sync examples. Images arrive as
float32 in [0, 1], labels as int32.

Determinism. A dataset whose train split fits in host memory (at most IN_MEMORY_MAX_BYTES as
uint8) is loaded once and read by random access as one endless stream over the whole split,
epoch after epoch, each epoch in a fresh pseudorandom order keyed by (seed, epoch); an
example's augmentation is keyed by (seed, its position in the stream). The global batch of
step s is stream positions s * B ... s * B + B - 1 (B = global_batch_size). Every input
pipeline holds the whole split and draws only its slice of that batch: pipeline p (of P)
feeding R local replicas draws `batch_at(s * P + p, ...)` of R * b examples, a pure function,
and deals it out in R consecutive slices of b. So the examples and their augmentation at a
step depend only on (seed, step, dataset, global batch), not on how many workers or replicas
share them: P workers make the update one process makes, up to float rounding (tested), and
`make_train_dataset(..., start_step=k)` resumes exactly, with no iterator state in the
checkpoint. The eval split is dealt out whole: pipeline p evaluates the examples p, p + P, ...

Where that equality cannot hold: bigger datasets stream from the TFDS files (file shuffle +
SHUFFLE_BUFFER, seeded), each pipeline reading its own share of the files through its own
shuffle buffer, so P workers train on other batches than one process (from the same data, in
another order) and another number of workers gives another run. The stream is reproducible
from step 0 for a given number of pipelines, but a resumed run does not replay it: it restarts
with a fresh, (seed, start_step)-keyed shuffle, so its position is approximate. A tf.data
stream of your own (`streams`) gives each pipeline whatever your `fn(ctx)` gives it.

Images of variable size (e.g. imagenet2012) are resized to RESIZE_TO (aspect ratio not kept).

Modules: `info` (DatasetInfo, the TFDS builder), `sources` (which source a name means,
opened once: `get_dataset_info`), `sampling` (which example where),
`augment` (pixel ops), `in_memory` and `streaming` (the per-pipeline datasets), `pipelines`
(the public factories), `digits` (the offline builder, registered on import), `folder`
(`folder:PATH`, a directory of images per class, decoded into memory once), `fingerprint`
(what a resume checks a folder's files against). The constants
re-exported here are copies: to change one, set it on its own module (e.g. `info`).

May import `trainer.base` only: functions take their settings as arguments, not the config.
"""

from trainer.data.in_memory import batch_at, load_in_memory
from trainer.data.info import IN_MEMORY_MAX_BYTES, NO_FLIP, RESIZE_TO, DatasetInfo
from trainer.data.sources import describe_inputs, get_dataset_info
from trainer.data.pipelines import (device_possible, make_device_batch_fn, make_eval_dataset,
                                    make_train_dataset, replica_update, train_dataset_fn)
from trainer.data.sampling import example_indices, shard
from trainer.data.streaming import SHUFFLE_BUFFER

__all__ = ["DatasetInfo", "get_dataset_info", "describe_inputs", "train_dataset_fn",
           "make_train_dataset",
           "make_eval_dataset", "make_device_batch_fn", "device_possible", "replica_update",
           "load_in_memory", "batch_at",
           "example_indices", "shard", "IN_MEMORY_MAX_BYTES", "SHUFFLE_BUFFER", "RESIZE_TO",
           "NO_FLIP"]
