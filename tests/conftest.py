"""Test-session setup: split the host CPU into logical devices before TF starts.

Logical devices can only be configured before the TF runtime initialises, so this runs at
import time, once per pytest process. `cpu` strategies use /cpu:0; `mirrored` tests pick
2 or 4 of these devices and run real replicas.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

NUM_CPU_DEVICES = 4

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * NUM_CPU_DEVICES)
