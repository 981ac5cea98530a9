"""Where a run computes: the `tf.distribute` strategy (`strategy.get_strategy`: cpu,
one_device, mirrored, multi_worker, tpu, auto), Cloud TPU discovery (`tpu`), which process
writes (`strategy.is_chief`), and the dtype policy for the hardware (`precision`).

May import `trainer.base` only.
"""
