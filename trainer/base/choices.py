"""The names a user chooses between, in one TensorFlow-free module.

The command line lists them in `--help` and checks them before TensorFlow loads; the config
check and the strategy builder read the same tuples.
"""

STRATEGIES = ("auto", "cpu", "one_device", "mirrored", "multi_worker", "tpu")
OPTIMIZERS = ("adamw", "adam", "sgd")
PRECISIONS = ("auto", "float32", "bfloat16", "mixed_float16")
INPUT_MODES = ("auto", "tf.data", "device")
NONFINITE = ("skip", "stop")
EXPORT_WEIGHTS = ("final", "best")
FOLDER_PREFIX = "folder:"  # dataset = "folder:PATH": a directory of images, not code
INIT_MODES = ("weights", "continue")
