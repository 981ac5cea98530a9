r"""ImageNet, EfficientNetV2-B0, bfloat16, on a Cloud TPU VM.

The data must already be prepared as TFDS imagenet2012 in a GCS bucket (ImageNet needs a
manual download), then on the TPU VM (or through launch/tpu_vm.sh):

  python -m trainer.main --config=configs/imagenet_efficientnetv2.py --strategy=tpu \
      --tpu=local --workdir=gs://BUCKET/runs/effv2b0 \
      --config.data_dir=gs://BUCKET/tensorflow_datasets

Global batch 4096 (e.g. 512 per core on a v3-8), SGD with momentum, peak LR 0.1 per 256
examples scaled linearly to 1.6 (Goyal et al. 2017), 5 epochs of warmup, cosine to 0 over 100
epochs, images at 224x224, mixed_bfloat16. Expected: ~0.75-0.78 top-1 after 100 epochs
(reference figure for this recipe; this repo's CI has no TPU, so it is not measured here).
"""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = "imagenet2012"
  c.model = "efficientnetv2b0"
  c.global_batch_size = 4096
  c.total_steps = 0
  c.num_epochs = 100.0
  c.steps_per_loop = 500
  c.eval_every = 5000
  c.checkpoint_every = 5000
  c.mixed_precision = "bfloat16"
  c.schedule.warmup_fraction = 0.0
  c.schedule.warmup_epochs = 5.0
  c.schedule.target_lr = 0.1
  c.schedule.base_batch_size = 256
  c.optimizer.name = "sgd"
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-5
  return c
