r"""CIFAR-10, ResNet-50, on a multi-GPU workstation.

Prepare the data once (needs the internet; or copy a prepared TFDS dir), then launch:

  tfds build cifar10 --data_dir=$HOME/tensorflow_datasets
  python -m trainer.main --config=configs/cifar10_resnet.py --strategy=mirrored \
      --workdir=runs/cifar10_resnet

Global batch 512 (128 per GPU on 4 GPUs), SGD with momentum, peak LR 0.1 per 256 examples
scaled linearly to 0.2, 5 epochs of warmup, cosine to 0 over 100 epochs, mixed_float16 on GPUs.
Expected: ~0.93 eval accuracy (keras.applications ResNet-50 on 32x32 inputs; not measured in
this repo's CI, which has no GPU).
"""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = "cifar10"
  c.model = "resnet50"
  c.global_batch_size = 512
  c.total_steps = 0
  c.num_epochs = 100.0
  c.steps_per_loop = 100
  c.eval_every = 2000
  c.checkpoint_every = 2000
  c.schedule.warmup_fraction = 0.0
  c.schedule.warmup_epochs = 5.0
  c.schedule.target_lr = 0.1
  c.schedule.base_batch_size = 256
  c.optimizer.name = "sgd"
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  return c
