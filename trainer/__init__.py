"""trainer: warmup + cosine-decay learning rates and a distributed TF2 training template."""

__version__ = "0.1.0"
