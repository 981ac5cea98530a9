"""trainer: warmup + cosine-decay learning rates and a distributed TF2 training template."""

import setuptools

setuptools.setup(
    name="trainer",
    version="0.1.0",
    description="Warmup + cosine-decay LR schedules in global steps, and a tf.distribute "
                "XLA training loop for Cloud TPU VMs, multi-GPU workstations and CPUs.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # configs/ is a package so variants can `from configs import default` from any cwd.
    packages=setuptools.find_packages(include=["trainer", "trainer.*", "configs"]),
    install_requires=[
        "tensorflow>=2.16",  # Keras 3 is the default Keras from 2.16 on
        "keras>=3.0",
        "tensorboard",  # tf.summary needs it; TF 2.21 no longer pulls it in
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # TFDS 4.9.10 imports it to prepare any dataset, undeclared
        "absl-py>=1.0",
        "ml-collections>=0.1.1",
        "matplotlib>=3.5",
        "numpy",
        "scikit-learn>=1.0",  # ships the offline default dataset (8x8 digits)
    ],
    extras_require={
        # pytest-xdist: the suite runs in 2 processes (README); psutil: the benchmarks read RSS
        # import-linter: CI checks the layers of trainer/ (.importlinter)
        "test": ["pytest>=7", "pytest-timeout", "pytest-xdist>=3", "hypothesis>=6",
                 "tf-keras>=2.16", "psutil", "import-linter>=2.1"],
        # Keras 2 under TF_USE_LEGACY_KERAS=1, as on TF's TPU images and in Model Garden.
        "legacy": ["tf-keras>=2.16"],
        # TPUClusterResolver needs Google's API client only for *named* TPUs; on a TPU VM use
        # --tpu=local. Not cloud-tpu-client: its pins force protobuf<4, which TF>=2.16 refuses.
        "tpu": ["google-api-python-client>=1.8", "oauth2client>=4.1"],
    },
)
