r"""The streamed input pipeline at ImageNet shape, per host core, and what feeding takes.

  python -m benchmarks.throughput --suite=pipeline [--quick] [--pipeline_images=2560]

Generates --pipeline_images JPEG files (224x224 RGB, quality 90, smooth colour fields with
noise; 10 classes) as a `folder:` dataset (DIR/train/<class>/, DIR/test/<class>/) in a
temporary directory on local disk, writes the same files into a TFDS dataset (the JPEG bytes
as they are, `tfds.features.Image(shape=(None, None, 3))`, as imagenet2012 stores them), and
deletes both at the end. Then times the tf.data path alone, from the stored bytes to float32
batches of --pipeline_batch 224x224x3 images, three ways:

  trainer_streaming  what the trainer streams a split over 2 GiB with (imagenet2012):
                     `data.train_dataset_fn` -> trainer.data.streaming (file shuffle + 10,000
                     shuffle buffer, full decode, antialiased resize to 224, batch, random
                     translation by up to 28 px + flip as one gather, to float)
  rrc_decode_crop    the TF Model Garden / Cloud TPU ImageNet reference: the same TFDS records
                     and shuffle, sample_distorted_bounding_box (area 0.08-1, aspect 3/4-4/3)
                     + decode_and_crop_jpeg, bilinear resize to 224, random flip, to float,
                     batch
  keras_directory    keras.utils.image_dataset_from_directory on the JPEG files (bilinear
                     resize to 224, shuffled), then RandomFlip + RandomZoom(-0.7..0, per side:
                     the closest Keras has to a random-resized crop) in a parallel map, to float

Each way runs in a child process of its own pinned to 1 core (and then to all cores) with
sched_setaffinity before TensorFlow starts; after one untimed pass, the three are timed in
interleaved passes of one epoch each. A pass first drains what the prefetch buffers hold, and a
child answers only once its background threads are idle, so one way's refill does not run in
another's pass. Reported: images/s (wall) and images per CPU-second (the child's CPU time over
the pass, all threads: the cost per core, steadier than wall time on a shared machine). The
per-core rate is the 1-core child's images per CPU-second; `feeding` divides published (or
labelled assumed) EfficientNet-B0 training rates by it.
"""

import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from benchmarks import harness

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAYS = ("trainer_streaming", "rrc_decode_crop", "keras_directory")
SIDE = 224
NUM_CLASSES = 10
TFDS_NAME = "imagenet_like"
TRAIN_EPOCHS = 350  # the EfficientNet-B0 recipe of tensorflow/tpu (train_steps 218949 x 2048)
IMAGENET_TRAIN = 1_281_167
# Accelerator -> (EfficientNet-B0 training images/s, where the number comes from).
ACCELERATORS = {
    "TPU v2-8": (
        IMAGENET_TRAIN * TRAIN_EPOCHS / (23 * 3600),
        "published: EfficientNet-B0 trains in 23 h on a Cloud TPU v2-8 (Wongpanich et al. "
        "2020, arXiv:2011.00071), at the recipe's 350 epochs of 1,281,167 images"),
    "TPU v3-8": (
        IMAGENET_TRAIN * TRAIN_EPOCHS / (23 * 3600) * 123 / 45,
        "ASSUMPTION: the v2-8 rate x 123/45, the peak bf16 TFLOPS per chip of v3 and v2 "
        "(Cloud TPU docs); an upper bound, no published v3-8 EfficientNet-B0 rate found"),
    "8x A100 (DGX A100), mixed precision": (
        20647, "published: NVIDIA DeepLearningExamples TF2 EfficientNet v1-B0, 8 GPUs, AMP"),
    "8x A100 (DGX A100), TF32": (
        9119, "published: NVIDIA DeepLearningExamples TF2 EfficientNet v1-B0, 8 GPUs, TF32"),
    "8x V100 (DGX-1), mixed precision": (
        4880, "published: NVIDIA DeepLearningExamples TF2 EfficientNet v1-B0, 8 GPUs, AMP"),
}
MODEL_NOTE = ("EfficientNetV2-B0 itself: no published per-accelerator training rate found; "
              "the rates are EfficientNet(-v1)-B0's, an ASSUMPTION that V2-B0 (7.1M "
              "parameters against 5.3M, about twice the FLOPs, but fused-MBConv stages built "
              "to train faster on accelerators) trains at about the same images/s")


def generate(root, n):
  """n train JPEGs (and 2 per class for test/) in root/{train,test}/<class>/; mean bytes."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  sizes = []
  for split, count in (("train", n), ("test", 2 * NUM_CLASSES)):
    for i in range(count):
      c = f"class_{i % NUM_CLASSES:02d}"
      os.makedirs(os.path.join(root, split, c), exist_ok=True)
      coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
      field = np.asarray(Image.fromarray(coarse).resize((SIDE, SIDE), Image.BICUBIC), np.float32)
      pixels = np.clip(field + rng.normal(0, 12, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
      path = os.path.join(root, split, c, f"{i:06d}.jpg")
      Image.fromarray(pixels).save(path, quality=90)
      sizes.append(os.path.getsize(path))
  return sum(sizes) / len(sizes)


def prepare_tfds(root, data_dir):
  """The JPEG files as a TFDS dataset in data_dir (bytes stored as they are)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  classes = sorted(os.listdir(os.path.join(root, "train")))

  class ImagenetLike(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(names=classes)}))

    def _split_generators(self, dl_manager):
      return {s: self._generate_examples(os.path.join(root, s)) for s in ("train", "test")}

    def _generate_examples(self, path):
      for label, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(path, c))):
          yield f"{c}/{f}", {"image": os.path.join(path, c, f), "label": label}

  assert ImagenetLike.name == TFDS_NAME, ImagenetLike.name
  with contextlib.redirect_stdout(sys.stderr):  # TFDS prints "Downloading and preparing"
    ImagenetLike(data_dir=data_dir).download_and_prepare()


# -- the child: one way, pinned -----------------------------------------------------------------

def _dataset(way, root, data_dir, batch):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from trainer import data  # pylint: disable=g-import-not-at-top
  from trainer.base.compat import keras  # pylint: disable=g-import-not-at-top
  from trainer.data import info as info_lib  # pylint: disable=g-import-not-at-top
  if way == "keras_directory":
    ds = keras.utils.image_dataset_from_directory(
        os.path.join(root, "train"), image_size=(SIDE, SIDE), batch_size=batch, shuffle=True,
        seed=0, verbose=False)
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=0),
                                keras.layers.RandomZoom((-0.7, 0.0), (-0.7, 0.0), seed=1)])
    return ds.repeat().map(lambda x, y: (augment(x, training=True) / 255.0, y),
                           num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
  builder = tfds.builder_from_directory(os.path.join(data_dir, TFDS_NAME, "1.0.0"))
  if way == "trainer_streaming":
    # The trainer streams whatever is over IN_MEMORY_MAX_BYTES (read at call time), as it
    # streams imagenet2012; this split is small enough to be held in memory otherwise.
    info_lib.IN_MEMORY_MAX_BYTES = 0
    info = data.DatasetInfo(TFDS_NAME, NUM_CLASSES, (SIDE, SIDE, 3),
                            builder.info.splits["train"].num_examples,
                            builder.info.splits["test"].num_examples, builder=builder)
    return data.train_dataset_fn(info, batch, 0, True)(tf.distribute.InputContext())
  ds = builder.as_dataset(split="train", shuffle_files=True,
                          read_config=tfds.ReadConfig(shuffle_seed=0, try_autocache=False),
                          decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.repeat().shuffle(10_000, seed=0)
  return ds.map(lambda ex: (_random_resized_crop(ex["image"]), ex["label"]),
                num_parallel_calls=tf.data.AUTOTUNE).batch(
                    batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _random_resized_crop(image_bytes):
  """The reference ImageNet train preprocessing (Model Garden / tensorflow/tpu resnet)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  begin, size, _ = tf.image.sample_distorted_bounding_box(
      tf.io.extract_jpeg_shape(image_bytes),
      bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
      min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  y, x, _ = tf.unstack(begin)
  h, w, _ = tf.unstack(size)
  image = tf.image.decode_and_crop_jpeg(image_bytes, tf.stack([y, x, h, w]), channels=3)
  image = tf.image.resize(image, [SIDE, SIDE], method="bilinear")
  return tf.image.random_flip_left_right(image) / 255.0


def _child(spec):
  cores = spec["cores"]
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))  # before TF starts
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)
  batch, batches = spec["batch"], spec["batches"]
  iterator = iter(_dataset(spec["way"], spec["root"], spec["data_dir"], batch))

  def one_pass():
    for _ in range(spec["drain"]):  # what the buffers hold: not produced during this pass
      next(iterator)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
      x, _ = next(iterator)
    assert tuple(x.shape) == (batch, SIDE, SIDE, 3) and x.dtype.name == "float32", x.shape
    out = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
           "images": batch * batches}
    _quiesce()
    return out

  one_pass()  # untimed: tracing, the shuffle buffer's first fill, the file cache
  harness.reply(ready=True)
  for line in sys.stdin:
    if line.strip() == "pass":
      harness.reply(**one_pass())
    else:
      harness.reply(peak_rss_mb=harness.peak_rss_mb())
      sys.stdout.flush()
      os._exit(0)  # pylint: disable=protected-access  (no wait for tf.data's threads)


def _quiesce(timeout=20.0):
  """Waits until the process's background threads (prefetch refills) stop using the CPU."""
  end = time.perf_counter() + timeout
  while time.perf_counter() < end:
    cpu = time.process_time()
    time.sleep(0.2)
    if time.process_time() - cpu < 0.01:
      return




# -- the parent ---------------------------------------------------------------------------------

def bench_pipeline(num_images, batch, repeats, log, core_counts=None):
  """Generates the files, times the three ways on each core count, deletes the files."""
  available = len(os.sched_getaffinity(0))
  core_counts = core_counts or sorted({1, available})
  batches = max(1, num_images // batch)
  tmp = tempfile.mkdtemp(prefix="imagenet_pipeline_")
  root, data_dir = os.path.join(tmp, "folder"), os.path.join(tmp, "tfds")
  out = {"images": num_images, "side": SIDE, "batch": batch, "batches_per_pass": batches,
         "repeats": repeats, "load_average_at_start": os.getloadavg(), "cores": {}}
  try:
    start = time.perf_counter()
    out["mean_jpeg_bytes"] = generate(root, num_images)
    prepare_tfds(root, data_dir)
    log(f"pipeline: {num_images} {SIDE}x{SIDE} JPEGs (mean {out['mean_jpeg_bytes'] / 1024:.0f} "
        f"KiB) and their TFDS records in {time.perf_counter() - start:.0f} s")
    for cores in core_counts:
      children = [harness.Child("benchmarks.imagenet_pipeline", {
          "way": w, "cores": cores, "root": root, "data_dir": data_dir, "batch": batch,
          "batches": batches, "drain": min(4, batches)}, w) for w in WAYS]
      for c in children:
        c.read()
      passes = {w: [] for w in WAYS}
      for r in range(repeats):
        for c in (children if r % 2 == 0 else children[::-1]):
          passes[c.name].append(c.ask("pass"))
      out["cores"][str(cores)] = {
          w: {"images_per_s": statistics.median(p["images"] / p["seconds"] for p in ps),
              "images_per_cpu_s": statistics.median(p["images"] / p["cpu_seconds"] for p in ps),
              "passes": ps, "peak_rss_mb": c.close()["peak_rss_mb"]}
          for (w, ps), c in zip(passes.items(), children)}
      log(f"  {cores} core(s): " + ", ".join(
          f"{w} {v['images_per_s']:.0f} img/s" for w, v in out["cores"][str(cores)].items()))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  out["load_average_at_end"] = os.getloadavg()
  per_core = out["cores"][str(min(core_counts))]
  out["per_core_images_per_s"] = {w: per_core[w]["images_per_cpu_s"] for w in WAYS}
  out["feeding"] = {name: {"images_per_s": rate, "source": source,
                           "host_cores": {w: rate / out["per_core_images_per_s"][w]
                                          for w in WAYS}}
                    for name, (rate, source) in ACCELERATORS.items()}
  out["model_note"] = MODEL_NOTE
  return out


def format_markdown(p):
  """The pipeline suite's tables for docs/benchmarks.md."""
  lines = [f"**The streamed pipeline at ImageNet shape**: {p['images']:,} generated "
           f"{p['side']}x{p['side']} JPEGs (mean {p['mean_jpeg_bytes'] / 1024:.0f} KiB), "
           f"batches of {p['batch']} float32 {p['side']}x{p['side']}x3, median of "
           f"{p['repeats']} interleaved one-epoch passes per way, each way in its own process "
           f"pinned to the cores given; load average {p['load_average_at_start'][0]:.1f} at the "
           f"start, {p['load_average_at_end'][0]:.1f} at the end", "",
           "| way | cores | images/s | images per CPU-second | peak RSS MB |",
           "| --- | ---: | ---: | ---: | ---: |"]
  for cores, ways in p["cores"].items():
    for w, v in ways.items():
      lines.append(f"| `{w}` | {cores} | {v['images_per_s']:,.0f} | "
                   f"{v['images_per_cpu_s']:,.0f} | {v['peak_rss_mb']:,.0f} |")
  lines += ["", "**Host cores to feed EfficientNet-B0** (accelerator images/s divided by the "
            "1-core images per CPU-second above)", "",
            "| accelerator | training images/s | host cores: " + " | host cores: ".join(
                f"`{w}`" for w in WAYS) + " | source of the rate |",
            "| --- | ---: | " + "---: | " * len(WAYS) + "--- |"]
  for name, f in p["feeding"].items():
    lines.append(f"| {name} | {f['images_per_s']:,.0f} | " + " | ".join(
        f"{f['host_cores'][w]:,.0f}" for w in WAYS) + f" | {f['source']} |")
  lines += ["", p["model_note"] + ".", ""]
  return "\n".join(lines)


def format_table(p):
  lines = [f"\npipeline at {p['side']}x{p['side']}, batch {p['batch']}, {p['images']} images"]
  for cores, ways in p["cores"].items():
    for w, v in ways.items():
      lines.append(f"  {w:18s} {cores} core(s) {v['images_per_s']:8.0f} img/s "
                   f"{v['images_per_cpu_s']:8.0f} img/CPU-s")
  for name, f in p["feeding"].items():
    lines.append(f"  {name:36s} {f['images_per_s']:8.0f} img/s needs " + ", ".join(
        f"{w} {c:.0f}" for w, c in f["host_cores"].items()) + " host cores")
  return "\n".join(lines)


if __name__ == "__main__":
  _child(json.loads(sys.argv[1]))
