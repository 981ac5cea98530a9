r"""Your images in a folder: circles, squares and triangles of any size, made on first use.

Launch from examples/ (makes runs/shapes_images/ if it is missing; about a minute on 2 cores):

  cd examples && python -m trainer.main --config=shapes/config.py --workdir=runs/shapes

Expected: eval accuracy >= 0.9 on the 60 held-out images (chance: 0.33); the images are
resized to 32x32 and augmented (translation, flips) like any image dataset.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repo, for configs
sys.path.insert(0, os.path.dirname(HERE))  # examples/, for shapes

from configs import default  # noqa: E402  pylint: disable=g-import-not-at-top
from shapes import images  # noqa: E402  pylint: disable=g-import-not-at-top


def get_config():
  c = default.get_config()
  c.dataset = "folder:" + images.make(os.path.join(os.getcwd(), "runs", "shapes_images"))
  c.image_size = 32
  c.model = "small_cnn"
  c.global_batch_size = 32
  c.total_steps = 300
  c.steps_per_loop = 50
  c.eval_every = 100
  c.checkpoint_every = 100
  return c
