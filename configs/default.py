"""Default: real Fashion-MNIST, 5 tasks of 2 classes, LwF, ResNet-18 (width 16).

Sized for a 2-core CPU: LwF or finetune finish in about 9 minutes, MFGR (a
300-step generator per incremental task) in about half an hour. Switch the
method with `--config.method=...`: finetune, lwf, oracle, ewc, mas, lwm, muc_lwf, icarl,
mfgr, lwf_g_bn, g_bn, lwf_g_base, deepinversion, icarl_mfgr (README, "Methods").
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.method = 'lwf'
  # Workdir of another run of the same setting whose task-0 model to reuse
  # ("we fix the initial model for all methods"); '' trains task 0 here.
  config.init_from = ''

  config.data = ml_collections.ConfigDict()
  # fashion_mnist | cifar100 | tiny_imagenet | caltech_birds2011 | caltech101 |
  # cub_caltech (CUB's 200 labels, then Caltech-101's 102) | synthetic
  config.data.name = 'fashion_mnist'
  config.data.data_dir = ''  # where TFDS keeps prepared data; '' = ~/tensorflow_datasets
  config.data.manual_dir = ''  # official archives; '' = the dataset's usual place
  config.data.download = True  # fall back to TFDS's download when nothing is found locally
  config.data.max_train_per_class = 0  # >0: a fixed (seed-0) subset of each class's training images
  config.data.max_test_per_class = 0  # >0: the same for the test images
  config.data.image_size = 0  # >0: resize every image to this square size (PIL bilinear)
  config.data.crop_padding = 2
  config.data.flip = True
  config.data.synthetic = ml_collections.ConfigDict(dict(
      num_classes=10, image_size=28, channels=1, train_per_class=256, test_per_class=64, seed=0))

  config.scenario = ml_collections.ConfigDict()
  config.scenario.class_order = 'identity'  # identity | seeded | comma-separated label ids
  config.scenario.class_order_seed = 1993
  config.scenario.base_classes = 0  # 0: the first task has `increment` classes too
  config.scenario.increment = 2
  config.scenario.num_tasks = 0  # >0: stop after this many tasks

  # stem: 'cifar' (3x3, no pooling) or 'imagenet' (7x7/2 + max-pool, for 224x224).
  # compute_dtype: 'bfloat16' for mixed precision on GPU/TPU (parameters, BN
  # statistics and losses stay float32); XLA's CPU is no faster in bfloat16.
  config.model = ml_collections.ConfigDict(dict(depth=18, width=16, stem='cifar',
                                                compute_dtype='float32'))

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 2
  config.train.batch_size = 128
  config.train.learning_rate = 0.1
  config.train.momentum = 0.9
  config.train.weight_decay = 5e-4
  config.eval_batch_size = 1000
  # A step whose loss or gradient is NaN/Inf is never applied; then 'stop' ends
  # the run naming the step and the terms, 'skip' counts it (results.json's
  # skipped_steps) and goes on.
  config.on_nonfinite = 'stop'

  # Knowledge distillation of lwf and the generator methods: soft-target CE at
  # this temperature, without Hinton's T^2 factor unless asked (the code has none).
  config.distillation = ml_collections.ConfigDict(dict(temperature=2.0, scale_by_t_squared=False))
  # LwM: LwF + attention_weight * L1 distance of normalised Grad-CAM maps (gamma; FACIL: 1).
  config.lwm = ml_collections.ConfigDict(dict(attention_weight=1.0))

  # Quadratic penalties on the backbone (consolidation.py): weight/2 * sum Omega
  # (theta - theta*)^2; Omega merged over tasks by 'average' (FACIL) or 'sum'.
  # importance_batch_size: images per step of the per-example gradients.
  config.ewc = ml_collections.ConfigDict(dict(
      weight=5000.0, accumulate='average', importance_batch_size=64))
  config.mas = ml_collections.ConfigDict(dict(
      weight=1.0, accumulate='average', output_norm='l2', importance_batch_size=64))

  # iCaRL (icarl, icarl_mfgr): exemplars kept in total over all seen classes,
  # split as evenly as possible and chosen by herding (iCaRL's K = 2000).
  config.icarl = ml_collections.ConfigDict(dict(memory_size=2000))

  # MUC (muc_lwf): side classifiers per task on frozen features, with a
  # discrepancy term on the training images of `auxiliary` (a `data.name`; SVHN
  # in the paper; synthetic ones are made in the main dataset's shape). MUC's
  # recipe: 3 heads, 80 epochs, SGD 0.1 divided by 10 at 1/2, 3/4 and 7/8.
  config.muc = ml_collections.ConfigDict(dict(
      auxiliary='synthetic', side_heads=3, side_epochs=80, side_learning_rate=0.1,
      side_batch_size=128))

  # Stage I of the generator methods (mfgr, lwf_g_bn, g_bn, lwf_g_base): a fresh
  # DAFL generator per incremental task, trained against the frozen old model.
  # The paper's CIFAR setting: 60000 steps at batch 512.
  config.generator = ml_collections.ConfigDict()
  config.generator.steps = 300
  config.generator.batch_size = 128  # the code: 512
  config.generator.learning_rate = 0.01
  config.generator.latent_dim = 1000
  config.generator.hidden = 128
  # 'dafl' (Generator32: two upsampling blocks) or 'pyramid' (Generator128/256 of
  # the CUB experiments: 4x4 start, one block per doubling).
  config.generator.architecture = 'dafl'
  config.generator.image_size = 0  # 0: the data's size; else made at this size, then resized
  config.generator.diversity_pairs = 50  # the code: 200 pairs of a 512 batch
  # Weights of the loss terms; a method uses the subset it names (methods/mfgr.py).
  # Code defaults; the paper's diversity weight lambda3 = 0.1.
  config.generator.weights = ml_collections.ConfigDict(dict(
      one_hot=1.0, class_balance=5.0, activation=0.1, signed_difference=10.0,
      bn_statistics=20.0, diversity=0.1))
  config.generator.log_every_steps = 50

  # Stage I of deepinversion: `batches` batches of images, each optimised from
  # noise for `iterations` Adam steps against the frozen old model (spec §8.8;
  # DeepInversion's CIFAR setting: 2000 iterations at batch 256, lr 0.05), with
  # class-balanced targets and jitter (random shift up to `jitter` px, flip).
  # bn_statistics is MFGR's term and weight (a mean over layers; DeepInversion
  # sums over layers with r = 10), so that the comparison is pool vs generator.
  config.deepinversion = ml_collections.ConfigDict()
  config.deepinversion.batches = 2
  config.deepinversion.batch_size = 128
  config.deepinversion.iterations = 200
  config.deepinversion.learning_rate = 0.05
  config.deepinversion.jitter = 2
  config.deepinversion.flip = True
  config.deepinversion.weights = ml_collections.ConfigDict(dict(
      target_ce=1.0, bn_statistics=20.0, total_variation=2.5e-5, l2_prior=1e-5))
  config.deepinversion.log_every_steps = 50

  # Stage II: generated images per step next to each real batch.
  config.replay = ml_collections.ConfigDict()
  config.replay.generated_batch_size = 128  # the code: 512 with 128 real
  # 'fixed': always generated_batch_size (the code); 'per_class': as many
  # generated images per old class as real ones per new class (the paper's 1:1).
  config.replay.balance = 'fixed'
  config.replay.single_pass = False  # True: one train-mode pass over generated+real

  config.log_every_steps = 50
  config.checkpoint_every_steps = 200
  return config
