r"""Decoding a `folder:` dataset: trainer.data.folder's tf.data map against tfds.ImageFolder.

  python -m benchmarks.folder_decode [--num_images=3000] [--image_size=64] [--repeats=3]
      [--dir=DIR] [--out=results.json]

Generates --num_images images (once, into --dir or a temporary directory) in the split layout
both ways can read, DIR/train/<class>/ and a small DIR/test/: half PNG, half JPEG (quality
90), of random sizes from 64 to 400 pixels a side, smooth colour fields with noise. Then,
for 1 core and for all cores (each in a child process pinned with sched_setaffinity before
TensorFlow starts), it decodes and resizes the train split to image_size x image_size x 3
uint8 both ways:

  folder        trainer.data.folder.decode (what the trainer runs): tf.io.read_file, then
                tf.io.decode_image + augment.fixed_size, as two parallel tf.data maps
  imagefolder   tfds.folder_dataset.ImageFolder(DIR).as_dataset('train'), the same
                augment.fixed_size in a parallel map, batched and put back in file-name order

One untimed pass warms the file cache and traces the graphs; then --repeats timed passes per
way, interleaved. Prints images/s (best and median) per way and core count, images per
CPU-second (process CPU time of all threads: the cost per core, robust to a shared machine's
load, unlike wall time), the load average, and whether both ways gave identical pixels.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_integer("num_images", 3000, "train images to generate")
flags.DEFINE_integer("image_size", 64, "side of the decoded images")
flags.DEFINE_integer("repeats", 3, "timed passes per way")
flags.DEFINE_string("dir", "", "where the images are (generated there if missing)")
flags.DEFINE_string("out", "", "also write the results as JSON here")
flags.DEFINE_integer("cores", 0, "internal: the child's core count (0 = run the children)")
FLAGS = flags.FLAGS

CLASSES = ("a", "b", "c")


def generate(root, n):
  """n train images (and n // 10 test images) in root/{train,test}/<class>/, if not there."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if os.path.isdir(os.path.join(root, "train")):
    return
  rng = np.random.default_rng(0)
  for split, count in (("train", n), ("test", max(len(CLASSES), n // 10))):
    for i in range(count):
      c = CLASSES[i % len(CLASSES)]
      os.makedirs(os.path.join(root, split, c), exist_ok=True)
      h, w = rng.integers(64, 401, 2)
      yy, xx = np.mgrid[0:h, 0:w]
      base = np.stack([xx * 255 // w, yy * 255 // h, np.full((h, w), 80 * (i % 3))], -1)
      pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
      ext = ".png" if i % 2 else ".jpg"
      Image.fromarray(pixels).save(os.path.join(root, split, c, f"{i:06d}{ext}"),
                                   **({"quality": 90} if ext == ".jpg" else {}))


def child(root, cores):
  """Times both ways pinned to `cores` cores; returns the result dict."""
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from trainer.data import augment, folder  # pylint: disable=g-import-not-at-top

  shape = (FLAGS.image_size, FLAGS.image_size, 3)
  name = f"folder:{root}"
  _, splits = folder.list_files(name)
  examples = splits["train"]

  def ours():
    return folder.decode(name, examples, shape)[0]

  builder = tfds.folder_dataset.ImageFolder(root, shape=(None, None, 3))

  def imagefolder():
    ds = builder.as_dataset(split="train", shuffle_files=False)
    ds = ds.map(lambda ex: (augment.fixed_size(ex["image"], shape), ex["image/filename"]),
                num_parallel_calls=tf.data.AUTOTUNE).batch(256)
    images, names = zip(*ds.as_numpy_iterator())
    images, names = np.concatenate(images), np.concatenate(names)
    return images[np.argsort(names, kind="stable")]  # file-name order, like ours

  ways = {"folder": ours, "imagefolder": imagefolder}
  outputs = {k: fn() for k, fn in ways.items()}  # warm-up: file cache, tracing
  seconds = {k: [] for k in ways}
  cpu_seconds = {k: [] for k in ways}
  for r in range(FLAGS.repeats):
    for k in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
      start, cpu_start = time.perf_counter(), time.process_time()
      ways[k]()
      seconds[k].append(time.perf_counter() - start)
      cpu_seconds[k].append(time.process_time() - cpu_start)  # all threads of the process
  n = len(examples)
  return {"cores": cores, "images": n, "image_size": FLAGS.image_size,
          "identical": bool(np.array_equal(outputs["folder"], outputs["imagefolder"])),
          "load_average": os.getloadavg(),
          **{k: {"best_images_per_s": n / min(s), "median_images_per_s": n / statistics.median(s),
                 "images_per_cpu_s": n / statistics.median(cpu_seconds[k]), "seconds": s,
                 "cpu_seconds": cpu_seconds[k]}
             for k, s in seconds.items()}}


def main(argv):
  del argv
  root = FLAGS.dir or os.path.join(tempfile.gettempdir(), f"folder_decode_{FLAGS.num_images}")
  if FLAGS.cores:
    print(json.dumps(child(root, FLAGS.cores)))
    return
  generate(root, FLAGS.num_images)
  available = len(os.sched_getaffinity(0))
  results = []
  for cores in sorted({1, available}):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.folder_decode", f"--cores={cores}", f"--dir={root}",
         f"--image_size={FLAGS.image_size}", f"--repeats={FLAGS.repeats}"],
        capture_output=True, text=True, check=True)
    results.append(json.loads(out.stdout.strip().splitlines()[-1]))
  print(f"{results[0]['images']} images -> {FLAGS.image_size}x{FLAGS.image_size}x3 uint8, "
        f"{FLAGS.repeats} timed passes, {os.cpu_count()} cores on the machine")
  print(f"{'way':<12} {'cores':>5} {'best img/s':>11} {'median img/s':>13} "
        f"{'img/CPU-s':>10}  load average")
  for r in results:
    for k in ("folder", "imagefolder"):
      m = r[k]
      print(f"{k:<12} {r['cores']:>5} {m['best_images_per_s']:>11.0f} "
            f"{m['median_images_per_s']:>13.0f} {m['images_per_cpu_s']:>10.0f}  "
            f"{' '.join(f'{x:.1f}' for x in r['load_average'])}")
  print("identical pixels:", all(r["identical"] for r in results))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
