"""A folder of images made on the fly: three classes of shapes, one sub-directory each.

  python -m shapes.images DIR      # DIR/train/<class>/*.png and DIR/test/<class>/*.png

Any directory laid out like this works as `dataset = "folder:DIR"`: your photos, one
sub-directory per class (or a single tree, split by `eval_fraction`).
"""

import os
import sys

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def make(directory, per_class=(60, 20), seed=0):
  """Writes PNGs of random sizes, colours and positions; does nothing if DIR has them."""
  if os.path.isdir(os.path.join(directory, "test")):
    return directory
  rng = np.random.default_rng(seed)
  for split, count in zip(("train", "test"), per_class):
    for label in CLASSES:
      os.makedirs(os.path.join(directory, split, label), exist_ok=True)
      for i in range(count):
        side = int(rng.integers(40, 90))
        image = Image.new("RGB", (side, side), tuple(int(c) for c in rng.integers(0, 80, 3)))
        draw = ImageDraw.Draw(image)
        r = side * rng.uniform(0.25, 0.4)
        cx, cy = rng.uniform(r, side - r, 2)
        colour = tuple(int(c) for c in rng.integers(150, 256, 3))
        if label == "circle":
          draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif label == "square":
          draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
          draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        image.save(os.path.join(directory, split, label, f"{i:03d}.png"))
  return directory


if __name__ == "__main__":
  make(sys.argv[1])
