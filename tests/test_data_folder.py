"""Tests for trainer.data.folder: `folder:PATH` datasets of generated PNG/JPEG/BMP/GIF trees.

Both layouts (labels, counts, order, resize, RGB conversion, the fixed split), every user
mistake as one ConfigError line naming its field, one decode per process, and (slow) short
runs through `python -m trainer.main` on one device and on two mirrored replicas.
"""

import hashlib
import json
import math
import os

import numpy as np
from PIL import Image
import pytest

from tests.conftest import eval_arrays, model_weights, one_line_error, run_main, take
from trainer import data
from trainer.run import summaries
from trainer.data import folder
from trainer.data import info as info_lib
from trainer.base.errors import ConfigError

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}  # sorted: labels 0..2


def solid(colour, size=(12, 9), mode="RGB"):
  return Image.new("RGB", size, colour).convert(mode)


def make_tree(root, per_class=5, split=""):
  """root/[split/]<class>/imgNN.png|jpg: uniform squares of the class colour, scaled by NN
  (so the file order shows in the pixels), of varying sizes, PNGs and JPEGs alternating."""
  for name, colour in COLOURS.items():
    os.makedirs(os.path.join(root, split, name), exist_ok=True)
    for i in range(per_class):
      ext = "png" if i % 2 == 0 else "jpg"
      shade = tuple(v * (10 - i) // 10 for v in colour)
      solid(shade, (10 + 7 * i, 30 - 3 * i)).save(os.path.join(root, split, name,
                                                              f"img{i:02d}.{ext}"))
  return root


def touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  open(path, "wb").close()


def info_of(root, **kwargs):
  return data.get_dataset_info(f"folder:{root}", **kwargs)


# The single tree.


def test_single_tree_labels_counts_order_and_resize(tmp_path):
  root = make_tree(str(tmp_path / "d"), per_class=5)
  info = info_of(root, image_size=16)
  assert info == data.DatasetInfo(f"folder:{root}", 3, (16, 16, 3), 12, 3)
  assert info.is_image and info.fits_in_memory and info.flip_allowed
  for split, per_class in (("train", 4), ("eval", 1)):
    images, labels = data.load_in_memory(info, split)
    assert images.shape == (3 * per_class, 16, 16, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], per_class))
    for label, colour in enumerate(COLOURS.values()):
      pixels = images[labels == label].astype(int)
      channel = int(np.argmax(colour))
      assert (pixels.max(axis=(1, 2))[:, channel] > 100).all()  # the class's colour ...
      other = [c for c in range(3) if c != channel]
      assert (pixels[..., other] < 12).all()  # ... only (JPEG wobbles a little)
      assert (pixels.std(axis=(1, 2)) < 2).all()  # a uniform image resizes to uniform
  # Files by name within a class: the shade falls with the file number.
  train, labels = info.loader("train")
  for label, colour in enumerate(COLOURS.values()):
    shades = train[labels == label][:, 0, 0, int(np.argmax(colour))].astype(int)
    assert (np.diff(shades) < 0).all(), shades


def test_default_size_is_64_and_resizing_is_antialiased(tmp_path):
  root = str(tmp_path / "d")
  dots = np.zeros((64, 64, 3), np.uint8)
  dots[::4, ::4] = 255  # one lit pixel in 16: mean 16
  for c in ("a", "b"):
    os.makedirs(os.path.join(root, c))
    for i in range(2):
      Image.fromarray(dots).save(os.path.join(root, c, f"{i}.png"))
  images, _ = info_of(root).loader("train")
  assert images.shape == (2, 64, 64, 3)
  np.testing.assert_array_equal(images[0], dots)  # already the size: exactly as is
  small, _ = info_of(root, image_size=8).loader("train")
  # Averaged over each 8x8 block; sampling (no antialiasing) would give 64 everywhere.
  assert 8 <= small.min() and small.max() <= 24, small[0, ..., 0]


def test_formats_are_converted_to_rgb(tmp_path):
  root = str(tmp_path / "d")
  os.makedirs(os.path.join(root, "x"))
  os.makedirs(os.path.join(root, "y"))
  colour = (250, 20, 30)
  palette = Image.new("P", (6, 5), 1)
  palette.putpalette([0, 0, 0, *colour] + [0] * 762)
  frames = [Image.new("P", (6, 5), i) for i in (1, 0)]
  for frame in frames:
    frame.putpalette([0, 0, 0, *colour] + [0] * 762)
  files = {
      "a_rgb.png": solid(colour),
      "b_gray.png": solid((90, 90, 90), mode="L"),
      "c_rgba.png": Image.new("RGBA", (7, 7), (*colour, 40)),
      "d_palette.png": palette,
      "e_rgb.bmp": solid(colour),
      "f_rgba.bmp": Image.new("RGBA", (7, 7), (*colour, 40)),
      "g_gray.bmp": solid((90, 90, 90), mode="L"),  # 8 bits with a gray table: allowed
      "h_rgb.JPG": solid(colour),
      "i_gray.jpeg": solid((90, 90, 90), mode="L"),
      "j_cmyk.jpg": solid(colour, mode="CMYK"),
  }
  for name, image in files.items():
    image.save(os.path.join(root, "x", name))
  frames[0].save(os.path.join(root, "x", "k_anim.gif"), save_all=True,
                 append_images=frames[1:])  # the first frame is the colour
  for i in range(2):
    solid((0, 0, 0)).save(os.path.join(root, "y", f"{i}.png"))
  info = info_of(root, image_size=4, eval_fraction=0.5)
  _, splits = folder.list_files(info.name, 0.5)
  checked = []
  for split in ("train", "eval"):
    images, _ = info.loader(split)
    assert images.shape[1:] == (4, 4, 3)
    for (path, label), image in zip(splits[split], images):
      name = os.path.basename(path)
      if label == 0:
        expected = (90, 90, 90) if "gray" in name else colour
        tolerance = 12 if name.lower().endswith(("jpg", "jpeg")) else 0
        assert np.abs(image.astype(int) - expected).max() <= tolerance, name
        checked.append(name)
  assert sorted(checked) == sorted([*files, "k_anim.gif"])


def test_single_tree_split_rounding(tmp_path):
  cases = [(2, 0.2, 1), (3, 0.2, 1), (5, 0.3, 2), (5, 0.5, 3), (7, 0.5, 4), (10, 0.25, 3),
           (10, 0.35, 4), (3, 0.9, 2), (40, 0.01, 1)]  # k = floor(n f + 1/2) in [1, n - 1]
  for n, fraction, k in cases:
    root = str(tmp_path / f"n{n}_{fraction}")
    for c in ("a", "b"):
      for i in range(n):
        touch(os.path.join(root, c, f"{i:03d}.png"))  # listing reads no pixels
    _, splits = folder.list_files(f"folder:{root}", fraction)
    assert len(splits["eval"]) == 2 * k and len(splits["train"]) == 2 * (n - k), (n, fraction)
    assert k == min(n - 1, max(1, math.floor(n * fraction + 0.5)))


def test_single_tree_split_is_fixed_by_file_names(tmp_path):
  """The held-out files: the k smallest SHA-256 of `class/file`, whatever the path, the order
  files were written in, or the training seed."""
  names = [f"photo_{i}.jpg" for i in range(20)]
  held = {}
  for where, order in (("one", names), ("elsewhere/two", names[::-1])):
    root = str(tmp_path / where)
    for name in order:
      touch(os.path.join(root, "cat", name))
      touch(os.path.join(root, "dog", name))
    _, splits = folder.list_files(f"folder:{root}", 0.2)
    held[where] = [os.path.relpath(p, root) for p, _ in splits["eval"]]
    train = [os.path.relpath(p, root) for p, _ in splits["train"]]
    assert sorted(set(held[where]) | set(train)) == sorted(
        f"{c}/{n}" for c in ("cat", "dog") for n in names)
  assert held["one"] == held["elsewhere/two"]
  for c in ("cat", "dog"):
    expected = sorted(names, key=lambda n: hashlib.sha256(f"{c}/{n}".encode()).digest())[:4]
    assert [h for h in held["one"] if h.startswith(c)] == [f"{c}/{n}" for n in sorted(expected)]


def test_eval_split_does_not_depend_on_the_training_seed(tmp_path, one):
  info = info_of(make_tree(str(tmp_path / "d"), per_class=6), image_size=8)
  (a,), (b,) = (eval_arrays(data.make_eval_dataset(info, one, 4, seed), one) for seed in (0, 7))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(a[1][a[2] > 0], [0, 1, 2])


# The split layout.


@pytest.mark.parametrize("held", ["test", "validation"])
def test_train_and_held_out_directories(tmp_path, held):
  root = str(tmp_path / "d")
  make_tree(root, per_class=4, split="train")
  make_tree(root, per_class=2, split=held)
  touch(os.path.join(root, "README.md"))  # files beside the directories are ignored
  info = info_of(root, image_size=8)
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (3, 12, 6)
  np.testing.assert_array_equal(info.loader("eval")[1], [0, 0, 1, 1, 2, 2])
  _, splits = folder.list_files(info.name)
  assert all(f"{os.sep}{held}{os.sep}" in p for p, _ in splits["eval"])


def test_test_is_preferred_to_validation(tmp_path):
  root = str(tmp_path / "d")
  make_tree(root, per_class=3, split="train")
  make_tree(root, per_class=2, split="test")
  make_tree(root, per_class=1, split="validation")
  assert info_of(root, image_size=8).num_eval_examples == 6


def test_hidden_names_are_ignored(tmp_path):
  root = make_tree(str(tmp_path / "d"), per_class=3)
  touch(os.path.join(root, "red", ".DS_Store"))
  touch(os.path.join(root, ".ipynb_checkpoints", "x.png"))
  os.makedirs(os.path.join(root, "green", ".thumbnails"))
  info = info_of(root, image_size=8)
  assert (info.num_classes, info.num_train_examples + info.num_eval_examples) == (3, 9)


# Decoded once per process, and fed to the in-memory pipelines.


def test_decoded_once_per_process(tmp_path, monkeypatch, one):
  calls = []
  real = folder.decode
  monkeypatch.setattr(folder, "decode", lambda *a: calls.append(a[1]) or real(*a))
  root = make_tree(str(tmp_path / "d"), per_class=5)
  info = info_of(root, image_size=8)
  assert len(calls) == 2  # train and eval
  assert info_of(root, image_size=8) is info
  assert data.load_in_memory(info, "train")[0] is data.load_in_memory(info, "train")[0]
  images, _ = data.load_in_memory(info, "train")
  assert not images.flags.writeable
  [[(x, y)]] = take(data.make_train_dataset(info, one, 6, 0, True), one, 1)
  assert x.shape == (6, 8, 8, 3) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
  assert set(y) <= {0, 1, 2}
  batch, device_data = data.make_device_batch_fn(info, one, 6, 0, True)
  np.testing.assert_array_equal(batch(0, device_data)[1], y)  # the same draw, device-resident
  take(data.make_eval_dataset(info, one, 6), one, 1)
  assert len(calls) == 2
  info_of(root, image_size=12)  # another size is another dataset
  assert len(calls) == 4


# Every user mistake: one line, naming the field.


def _tree_with(tmp_path, change):
  root = make_tree(str(tmp_path / "d"), per_class=3)
  change(root)
  return root


def _write(path, content=b"not an image"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(content)


def _truncated_jpeg(path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(path)
  with open(path, "rb") as f:
    content = f.read()
  _write(path, content[:len(content) // 2])


def _colour_bmp(path):
  image = Image.new("P", (5, 5), 1)
  image.putpalette([0, 0, 0, 250, 20, 30] + [0] * 762)
  image.save(path)


def _mk(path):
  os.makedirs(path, exist_ok=True)
  return str(path)


def _split_layout(root, train=("a", "b"), test=("a", "b")):
  for split, classes in (("train", train), ("test", test)):
    for c in classes:
      solid((1, 2, 3)).save(os.path.join(_mk(os.path.join(root, split, c)), "0.png"))


MISTAKES = {  # id: (how the tree is made, the parts the one-line message must contain)
    "does_not_exist": (lambda tmp: str(tmp / "nowhere"), ["dataset:", "does not exist"]),
    "is_a_file": (lambda tmp: (touch(str(tmp / "f.png")), str(tmp / "f.png"))[1],
                  ["dataset:", "is a file"]),
    "no_path": (lambda tmp: "", ["dataset:", "folder:PATH"]),
    "no_class_directories": (
        lambda tmp: (touch(str(tmp / "d" / "a.png")), str(tmp / "d"))[1],
        ["dataset:", "no class sub-directories"]),
    "one_class": (lambda tmp: (solid((1, 1, 1)).save(_mk(tmp / "d" / "only") + "/0.png"),
                               str(tmp / "d"))[1], ["dataset:", "1 class", "at least 2"]),
    "empty_class": (lambda tmp: _tree_with(tmp, lambda r: os.makedirs(os.path.join(r, "void"))),
                    ["dataset:", "void/", "no images"]),
    "hidden_only_class": (
        lambda tmp: _tree_with(tmp, lambda r: touch(os.path.join(r, "void", ".keep"))),
        ["dataset:", "void/", "no images"]),
    "unreadable_image": (
        lambda tmp: _tree_with(tmp, lambda r: _write(os.path.join(r, "red", "zz.png"))),
        ["dataset:", f"red{os.sep}zz.png", "not a readable image"]),
    "truncated_jpeg": (
        lambda tmp: _tree_with(tmp, lambda r: _truncated_jpeg(os.path.join(r, "red", "t.jpg"))),
        ["dataset:", f"red{os.sep}t.jpg", "not a readable image"]),
    "colour_palette_bmp": (
        lambda tmp: _tree_with(tmp, lambda r: _colour_bmp(os.path.join(r, "red", "p.bmp"))),
        ["dataset:", f"red{os.sep}p.bmp", "palette"]),
    "not_an_image_file": (
        lambda tmp: _tree_with(tmp, lambda r: touch(os.path.join(r, "red", "notes.txt"))),
        ["dataset:", f"red{os.sep}notes.txt", ".png"]),
    "directory_in_class": (
        lambda tmp: _tree_with(tmp, lambda r: os.makedirs(os.path.join(r, "red", "more"))),
        ["dataset:", f"red{os.sep}more", "image files only"]),
    "single_image_class": (
        lambda tmp: _tree_with(tmp, lambda r: solid((1, 1, 1)).save(
            _mk(os.path.join(r, "solo")) + "/0.png")), ["dataset:", "'solo'", "at least 2"]),
    "train_without_test": (
        lambda tmp: make_tree(str(tmp / "d"), 2, split="train"),
        ["dataset:", "train/", "no test/ or validation/"]),
    "train_test_and_more": (
        lambda tmp: (_split_layout(str(tmp / "d")), os.makedirs(str(tmp / "d" / "extra")),
                     str(tmp / "d"))[2], ["dataset:", "extra/"]),
    "different_classes": (
        lambda tmp: (_split_layout(str(tmp / "d"), ("a", "b", "c"), ("a", "b", "d")),
                     str(tmp / "d"))[1],
        ["dataset:", "different classes", "only in train/: c", "only in test/: d"]),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_dataset_mistakes_are_one_line(tmp_path, mistake):
  make, parts = MISTAKES[mistake]
  root = make(tmp_path)
  with pytest.raises(ConfigError) as excinfo:
    info_of(root, image_size=8)
  one_line_error(excinfo, *parts)


@pytest.mark.parametrize("size", [-1, 1.5, True, "64", None, folder.MAX_SIZE + 1, 10**9])
def test_image_size_mistakes(tmp_path, size):
  root = make_tree(str(tmp_path / "d"), per_class=2)
  with pytest.raises(ConfigError) as excinfo:
    info_of(root, image_size=size)
  one_line_error(excinfo, "image_size:", repr(size))


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"), "0.2", None])
def test_eval_fraction_mistakes_for_a_single_tree(tmp_path, fraction):
  root = make_tree(str(tmp_path / "d"), per_class=2)
  with pytest.raises(ConfigError) as excinfo:
    info_of(root, image_size=8, eval_fraction=fraction)
  one_line_error(excinfo, "eval_fraction:")


def test_eval_fraction_with_train_and_test_is_refused(tmp_path):
  root = str(tmp_path / "d")
  _split_layout(root)
  assert info_of(root, image_size=8, eval_fraction=0.2).num_eval_examples == 2
  with pytest.raises(ConfigError) as excinfo:
    info_of(root, image_size=8, eval_fraction=0.3)
  one_line_error(excinfo, "eval_fraction:", "train/ and test/", "0.3")


def test_a_split_too_big_for_memory_is_refused(tmp_path, monkeypatch):
  root = make_tree(str(tmp_path / "d"), per_class=5)  # 12 train images
  monkeypatch.setattr(info_lib, "IN_MEMORY_MAX_BYTES", 12 * 16 * 16 * 3)
  assert info_of(root, image_size=16).num_train_examples == 12  # exactly the limit fits
  with pytest.raises(ConfigError) as excinfo:
    info_of(root, image_size=17)
  one_line_error(excinfo, "dataset:", "train split", "image_size", "tfds build")


# End to end through `python -m trainer.main`.


def easy_tree(root, per_class=30, seed=0):
  """3 classes: a red, green or blue square of random size and place on a noisy gray
  background, in images of random sizes, PNG and JPEG."""
  rng = np.random.default_rng(seed)
  for name, colour in COLOURS.items():
    os.makedirs(os.path.join(root, name))
    for i in range(per_class):
      h, w = rng.integers(24, 90, 2)
      pixels = rng.normal(128, 30, (h, w, 3))
      side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
      y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
      pixels[y:y + side, x:x + side] = colour
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
          os.path.join(root, name, f"{i:03d}.{'png' if i % 2 else 'jpg'}"))
  return root


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
  return easy_tree(str(tmp_path_factory.mktemp("folder") / "shapes"))


RUN = ["--config.model=mlp", "--config.image_size=24", "--config.total_steps=60", "--config.steps_per_loop=20",
       "--config.eval_every=0", "--config.checkpoint_every=0", "--config.global_batch_size=32",
       "--config.schedule.warmup_steps=6", "--config.schedule.target_lr=0.003"]


def _check_run(result, workdir, easy):
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)["config"]
  assert (config["dataset"], config["image_size"]) == (f"folder:{easy}", 24)
  # The mlp's first kernel: the images reached it at 24 x 24 x 3.
  assert (24 * 24 * 3, 64) in [w.shape for w in model_weights(workdir)]
  accuracy = summaries.read_scalars(workdir, "eval", "accuracy")
  assert max(accuracy) == 60 and accuracy[60] >= 0.9, accuracy  # chance is 1/3


@pytest.mark.slow
def test_trains_through_main_on_cpu(easy, tmp_path):
  workdir = str(tmp_path / "w")
  result = run_main(f"--config.dataset=folder:{easy}", "--strategy=cpu", f"--workdir={workdir}",
                    *RUN, cwd=str(tmp_path))
  _check_run(result, workdir, easy)


@pytest.mark.slow
def test_trains_through_main_on_two_mirrored_replicas(easy, tmp_path):
  workdir = str(tmp_path / "w")
  result = run_main(f"--config.dataset=folder:{easy}", "--strategy=mirrored",
                    "--cpu_devices=2", f"--workdir={workdir}", *RUN, cwd=str(tmp_path))
  _check_run(result, workdir, easy)


def test_a_bad_image_is_one_line_and_exit_2_through_main(tmp_path):
  root = make_tree(str(tmp_path / "d"), per_class=3)
  _write(os.path.join(root, "red", "zz.png"))
  workdir = str(tmp_path / "w")
  result = run_main(f"--config.dataset=folder:{root}", "--strategy=cpu", f"--workdir={workdir}",
                    cwd=str(tmp_path), timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: dataset: ") and f"red{os.sep}zz.png" in last, last
  assert not os.path.exists(workdir)  # refused before anything was written


# A resume checks the files (config.json's "data"), not only the steps per epoch.

def _folder_run(root, total_steps=4, **fields):
  from tests.conftest import default_config  # pylint: disable=g-import-not-at-top
  return default_config(dataset=f"folder:{root}", model="mlp", image_size=8,
                        total_steps=total_steps, steps_per_loop=2, eval_every=0,
                        checkpoint_every=2, global_batch_size=6,
                        **{"schedule.warmup_fraction": 0.0, "schedule.warmup_steps": 1}, **fields)


def _train(config, workdir, **kwargs):
  from tests.conftest import cpu  # pylint: disable=g-import-not-at-top
  from trainer.data import sources  # pylint: disable=g-import-not-at-top
  from trainer.run import train  # pylint: disable=g-import-not-at-top
  sources._cached_info.cache_clear()  # the files changed: decode them again, as a new process
  return train.train_and_evaluate(config, workdir, cpu(), **kwargs)


@pytest.mark.slow
def test_a_resume_on_changed_files_is_refused_and_allowed_with_the_flag(tmp_path):
  root = make_tree(str(tmp_path / "d"), per_class=5)
  workdir = str(tmp_path / "w")
  _train(_folder_run(root), workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    recorded = json.load(f)["data"]
  assert recorded["images"] == {"blue": [4, 1], "green": [4, 1], "red": [4, 1]}
  # The same counts and names, one image redrawn: the steps per epoch cannot tell.
  solid((1, 2, 3), (10, 30)).save(os.path.join(root, "red", "img00.png"))
  with pytest.raises(ConfigError) as e:
    _train(_folder_run(root, total_steps=8), workdir)
  assert one_line_error(e).startswith(f"dataset: cannot resume {workdir} was trained on "
                                            f"other data: folder:{root} changed since (the "
                                            f"same images per class, but other files")
  # An image moved to another class: the counts say which.
  os.rename(os.path.join(root, "red", "img04.png"), os.path.join(root, "blue", "img09.png"))
  with pytest.raises(ConfigError, match="class 'blue' had 4 train and 1 eval images, now"):
    _train(_folder_run(root, total_steps=8), workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["data"] == recorded  # refused: nothing rewritten
  result = _train(_folder_run(root, total_steps=8), workdir, allow_config_change=True)
  assert result["step"] == 8
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["data"]["images"]["blue"] != recorded["images"]["blue"]
  # Unchanged since: the finished run is accepted without the flag.
  assert _train(_folder_run(root, total_steps=8), workdir)["step"] == 8


def test_fingerprint_change_names_what_changed():
  from trainer.data import fingerprint  # pylint: disable=g-import-not-at-top
  old = {"images": {"a": [4, 1], "b": [4, 1]}, "files": "x"}
  assert fingerprint.change(old, dict(old)) == ""
  assert fingerprint.change(None, old) == ""  # a config.json from before fingerprints
  assert fingerprint.change(old, {**old, "files": "y"}).startswith("the same images per class")
  assert fingerprint.change(old, {"images": {"a": [4, 1]}, "files": "y"}) == "class 'b' removed"
  assert fingerprint.change(old, {"images": {**old["images"], "c": [1, 0]}, "files": "x"}) == (
      "class 'c' added")
  # Content, not only names and sizes: one byte changed is another fingerprint.
  splits = {"train": [("r/a/1.png", 0)], "eval": []}
  one = fingerprint.of_folder(["a"], splits, {"train": [(10, "00ff")], "eval": []})
  two = fingerprint.of_folder(["a"], splits, {"train": [(10, "00fe")], "eval": []})
  assert one["images"] == two["images"] == {"a": [1, 0]} and one["files"] != two["files"]


def test_a_workdir_inside_the_dataset_and_data_dir_are_refused(tmp_path):
  root = make_tree(str(tmp_path / "d"), per_class=3)
  inside = os.path.join(root, "runs", "a")
  with pytest.raises(ConfigError) as e:
    _train(_folder_run(root), inside)
  assert one_line_error(e).startswith(f"workdir: {inside} is inside the directory of "
                                            f"dataset 'folder:{root}'")
  assert not os.path.exists(os.path.join(root, "runs"))  # nothing written into the data
  with pytest.raises(ConfigError, match=r"^data_dir: 'folder:.*' reads its own directory"):
    _train(_folder_run(root, data_dir=str(tmp_path / "tfds")), str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")
  assert folder.contains(f"folder:{root}", root) and not folder.contains(f"folder:{root}",
                                                                         root + "2")
