r"""Default: a small CNN on scikit-learn's 8x8 handwritten digits, offline, on CPU.

Launch (no download, about a minute on 2 CPU cores):

  python -m trainer.main
  python -m trainer.main --config=configs/default.py --workdir=runs/digits \
      --strategy=mirrored --cpu_devices=2

Expected: eval accuracy >= 0.95 (typically ~0.98) on the 360 held-out digits after
600 global steps; the learning rate warms up for 60 steps to 3e-3, then decays to 0.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the base config. Every other config starts from this one."""
  c = ml_collections.ConfigDict()
  # Any TFDS image-classification name, 'digits' (offline), 'synthetic', 'folder:PATH' (one
  # sub-directory of images per class), or 'package.module:function' (your own arrays).
  c.dataset = "digits"
  c.data_dir = ""  # TFDS data_dir; '' = TFDS default (~/tensorflow_datasets). May be gs://.
  c.image_size = 0  # resize images to this square side; 0 = the dataset's own (folder: 64)
  c.eval_fraction = 0.2  # folder: without train/ and test/: held out per class, fixed split
  # A registered name (small_cnn, mlp, resnet50, efficientnetv2b0, @models.register'ed ones)
  # or 'package.module:function' returning a keras.Model.
  c.model = "small_cnn"
  c.task = "classification"  # classification | regression | 'package.module:TaskClass'
  c.global_batch_size = 128  # summed over all replicas: the examples of one update
  # Micro-batches per replica per update: each replica runs k slices of its share one after
  # another and sums their gradients (less activation memory, same update; BatchNorm then
  # normalises over a slice). Steps, schedule and intervals still count updates.
  c.grad_accum_steps = 1
  # Exponential moving average of the weights (0 = off, e.g. 0.999): evaluated beside the raw
  # weights (eval/ema_*) and exported. ema_warmup: decay min(ema_decay, (1 + t) / (10 + t)).
  c.ema_decay = 0.0
  c.ema_warmup = True
  c.total_steps = 600  # global steps; 0 = derive from num_epochs
  c.num_epochs = 0.0  # used only when total_steps == 0
  c.steps_per_loop = 50  # steps per host call (one tf.function)
  c.eval_every = 200  # global steps; also at the end
  c.checkpoint_every = 200  # global steps; also at the end
  c.max_checkpoints = 3  # the latest kept; and beside them:
  c.keep_best = 1  # the checkpoints of the k best evals (the task's best metric)
  c.keep_every = 0  # global steps: every multiple kept for good (0 = none)
  # A step whose gradients are not all finite: skip its update (counted in skipped_updates)
  # or stop the run (exit 3). More than max_consecutive_skips in a row is a divergence.
  c.nonfinite = "skip"  # skip | stop
  c.max_consecutive_skips = 10
  # On a divergence (a loop's loss not finite, or above loss_upper_bound from
  # recovery_begin_steps on): roll back to the last checkpoint with the learning rate times
  # recovery_lr_factor, up to recovery_max_trials times (0 = stop with exit 3).
  c.recovery_max_trials = 0
  c.recovery_lr_factor = 0.5
  c.loss_upper_bound = 0.0  # 0 = none
  c.recovery_begin_steps = 0
  # Stop when early_stop_patience evals in a row did not improve the best metric by more
  # than early_stop_min_delta (0 = never); the run then ends as a finished one.
  c.early_stop_patience = 0
  c.early_stop_min_delta = 0.0
  c.export_weights = "final"  # final | best (the best eval's checkpoint)
  c.seed = 0
  c.augment = True
  c.mixed_precision = "auto"  # auto | float32 | bfloat16 | mixed_float16
  # XLA where it is faster: the replica step (whole loop with device input) or forward+backward
  # (mirrored); never convolutions on the CPU, where TF's oneDNN kernels win (see README).
  c.jit_compile = True
  # auto | tf.data | device. device: the train split lives on the device and each step draws
  # its batch there (one replica, data in memory). auto: device where it applies, else tf.data.
  c.input_mode = "auto"
  # Start from another run (README: "Starting from another run"), read only when this run's
  # own workdir has no checkpoint yet (a resume always continues its own): a workdir (its
  # latest readable checkpoint), one checkpoint ('runs/a/checkpoints/ckpt-400') or an
  # export's model.keras; '' = from scratch.
  c.init_from = ""
  # weights: fine-tune. The model's weights, matched by variable path and shape (the rest keep
  # their fresh initialisation, e.g. a new head); step 0, a fresh optimizer, this schedule.
  # continue: fork. Weights, optimizer state, EMA and global step of that checkpoint, trained
  # on under this config (e.g. a cooldown from step S); same model and optimizer kind.
  c.init_mode = "weights"
  # weights: start even if the source holds only a minority of this model's weights.
  c.init_allow_partial = False

  c.schedule = ml_collections.ConfigDict()
  c.schedule.warmup_steps = 0  # global steps; if 0, warmup_fraction/warmup_epochs are used
  c.schedule.warmup_fraction = 0.1  # of total_steps
  c.schedule.warmup_epochs = 0.0
  c.schedule.hold = 0  # global steps at the peak
  # The decay after warmup and hold: cosine | linear | constant | rsqrt (or a shape registered
  # with trainer.schedules.register_decay). constant + a cooldown is warmup-stable-decay.
  c.schedule.decay = "cosine"
  c.schedule.cooldown_steps = 0  # the last steps, cooled down to final_lr; if 0, the two below
  c.schedule.cooldown_fraction = 0.0  # of total_steps
  c.schedule.cooldown_epochs = 0.0
  c.schedule.cooldown_shape = "linear"  # linear | cosine | 1-sqrt
  c.schedule.rsqrt_timescale = 0  # rsqrt's tau in steps; 0 = the warmup length (1 without)
  c.schedule.start_lr = 0.0
  c.schedule.target_lr = 3e-3  # peak LR at base_batch_size (or as is when base_batch_size=0)
  c.schedule.final_lr = 0.0
  c.schedule.base_batch_size = 0  # >0: target_lr *= global_batch_size / base_batch_size

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"  # adamw | adam | sgd
  c.optimizer.weight_decay = 1e-4
  c.optimizer.momentum = 0.9  # sgd only
  c.optimizer.beta_1 = 0.9
  c.optimizer.beta_2 = 0.999
  c.optimizer.clipnorm = 0.0  # 0 = off
  # Per-variable learning rates: 'PATTERN=MULT,PATTERN=MULT', regular expressions over whole
  # variable paths ('conv1/kernel'; see --print_lr_mults), the first match wins, unmatched 1.
  # A variable's rate is schedule(step) * MULT; 0 freezes it (no gradient, no optimizer slots).
  # E.g. 'logits/.*=1,.*=0.1': the head at the schedule's rate, the rest at a tenth.
  c.optimizer.lr_mults = ""
  # Layer-wise decay (0 = off, e.g. 0.75): the layer i steps below the output gets
  # layer_decay**i, times its lr_mults multiplier (README: how layers are counted).
  c.optimizer.layer_decay = 0.0
  return c
