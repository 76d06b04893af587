"""PyTorch twins of this project's train steps, served to benchmarks/vs_pytorch.py.

Imports only torch and numpy (not the project), so it runs under any interpreter
that has them, e.g. a Python 3.11 venv holding the CPU build of torch:

    python benchmarks/torch_steps.py      # JSON lines: one request in, one reply out

The models are what a PyTorch user of MFGR trains: torchvision's BasicBlock
ResNet (conv1/bn1/layer1..4/fc; CIFAR stem: 3x3 conv, no max-pool) and DAFL's
generator. The steps do what the project's do (classifier.make_train_step,
classifier.make_replay_step, inversion.make_generator_step): pad-crop-flip of
uint8 images inside the step, BatchNorm in train mode, SGD with momentum and
coupled weight decay for the classifier, Adam for the generator, and the same
loss terms (finetune's CE; LwF's cut CE + distillation; MFGR's six stage-I
terms with the old model's BN input statistics taken by forward hooks; the
replay step's two train-mode passes, generated then real, with the teacher on
both). Requests:

  {"op": "build", "setting": {...}}       -> {"parameters": {model: count}}
  {"op": "load", "path": F}               state dicts from the .npz F (model/key)
  {"op": "outputs", "path": F, "out": G}  eval logits of the classifiers and
                                          generator samples on F's inputs, into G
  {"op": "run", "step": S, "steps": n}    -> {"seconds": wall time of n steps}
  {"op": "release"}                       gives freed memory back to the system
"""

import ctypes
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):

  def __init__(self, inputs: int, features: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(inputs, features, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(features)
    self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(features)
    self.downsample = None
    if stride != 1 or inputs != features:
      self.downsample = nn.Sequential(nn.Conv2d(inputs, features, 1, stride, bias=False),
                                      nn.BatchNorm2d(features))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
  """Returns (logits, pooled features), as the project's ResNet."""

  def __init__(self, depth: int, num_classes: int, width: int, stem: str, channels: int):
    super().__init__()
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]
    if stem == 'cifar':
      self.conv1 = nn.Conv2d(channels, width, 3, 1, 1, bias=False)
      self.maxpool = nn.Identity()
    else:
      self.conv1 = nn.Conv2d(channels, width, 7, 2, 3, bias=False)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.bn1 = nn.BatchNorm2d(width)
    inputs = width
    for stage, count in enumerate(blocks):
      features = width * 2**stage
      layers = []
      for block in range(count):
        layers.append(BasicBlock(inputs, features, 2 if stage and not block else 1))
        inputs = features
      setattr(self, f'layer{stage + 1}', nn.Sequential(*layers))
    self.fc = nn.Linear(inputs, num_classes)

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    features = x.mean((2, 3))
    return self.fc(features), features


class Generator(nn.Module):
  """DAFL's generator: Linear, BN, 2 x (upsample, conv, BN(eps 0.8), LeakyReLU), conv,
  tanh, affine-free BN; always normalised with the batch's statistics."""

  def __init__(self, image_size: int, channels: int, latent_dim: int, hidden: int):
    super().__init__()
    self.start, self.hidden = image_size // 4, hidden
    self.linear = nn.Linear(latent_dim, hidden * self.start**2)
    self.layers = nn.Sequential(
        nn.BatchNorm2d(hidden), nn.Upsample(scale_factor=2),
        nn.Conv2d(hidden, hidden, 3, 1, 1), nn.BatchNorm2d(hidden, 0.8), nn.LeakyReLU(0.2),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(hidden, hidden // 2, 3, 1, 1), nn.BatchNorm2d(hidden // 2, 0.8),
        nn.LeakyReLU(0.2), nn.Conv2d(hidden // 2, channels, 3, 1, 1), nn.Tanh(),
        nn.BatchNorm2d(channels, affine=False))

  def forward(self, z):
    return self.layers(self.linear(z).view(-1, self.hidden, self.start, self.start))


def augment(images: torch.Tensor, padding: int, mean: torch.Tensor, std: torch.Tensor,
            generator: torch.Generator) -> torch.Tensor:
  """Pad-crop-flip each uint8 NHWC image at random, then normalise; returns NCHW.
  Vectorised (one gather for the whole batch), as ours runs inside the jitted step."""
  n, h, w, c = images.shape
  padded = F.pad(images.permute(0, 3, 1, 2).float() / 255, (padding,) * 4)
  offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
  flips = torch.rand(n, generator=generator) < 0.5
  rows = offsets[:, :1] + torch.arange(h)
  columns = torch.arange(w).expand(n, w)
  columns = offsets[:, 1:] + torch.where(flips[:, None], columns.flip(-1), columns)
  crops = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                 rows[:, None, :, None], columns[:, None, None, :]]
  return (crops - mean) / std


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float):
  return -(F.softmax(teacher / temperature, -1) * F.log_softmax(student / temperature, -1)).sum(
      -1).mean()


def safe_norm(x: torch.Tensor) -> torch.Tensor:
  return x.square().sum().clamp_min(1e-30).sqrt()


class Steps:
  """The models, optimisers and fixed inputs of one setting, and its steps."""

  def __init__(self, setting: dict):
    torch.manual_seed(0)
    self.s = s = setting
    h, w, c = s['image_shape']
    self.student = ResNet(s['depth'], s['num_seen'], s['width'], s['stem'], c)
    self.teacher = ResNet(s['depth'], s['num_old'], s['width'], s['stem'], c).eval()
    self.teacher.requires_grad_(False)
    self.generator = Generator(h, c, s['latent_dim'], s['hidden'])
    self.sgd = torch.optim.SGD(self.student.parameters(), lr=s['learning_rate'],
                               momentum=s['momentum'], weight_decay=s['weight_decay'])
    self.adam = torch.optim.Adam(self.generator.parameters(), lr=s['generator_learning_rate'])
    self.random = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(0)
    self.images = torch.from_numpy(rng.integers(0, 256, (s['batch_size'], h, w, c), np.uint8))
    self.labels = torch.from_numpy(rng.integers(s['num_old'], s['num_seen'], s['batch_size']))
    self.mean = torch.tensor(s['mean']).view(1, c, 1, 1)
    self.std = torch.tensor(s['std']).view(1, c, 1, 1)
    self.bn_layers = [m for m in self.teacher.modules() if isinstance(m, nn.BatchNorm2d)]

  def parameters(self) -> dict:
    return {name: sum(p.numel() for p in getattr(self, name).parameters())
            for name in ('student', 'teacher', 'generator')}

  def _real(self) -> torch.Tensor:
    return augment(self.images, self.s['padding'], self.mean, self.std, self.random)

  def _classifier_update(self, loss: torch.Tensor) -> None:
    self.sgd.zero_grad(set_to_none=True)
    loss.backward()
    self.sgd.step()

  def finetune(self) -> None:
    self.student.train()
    logits, _ = self.student(self._real())
    self._classifier_update(F.cross_entropy(logits, self.labels))

  def lwf(self) -> None:
    images, old, t = self._real(), self.s['num_old'], self.s['temperature']
    with torch.no_grad():
      teacher_logits, _ = self.teacher(images)
    self.student.train()
    logits, _ = self.student(images)
    weight = old / self.s['num_seen']
    loss = (1 - weight) * F.cross_entropy(logits[:, old:], self.labels - old) + weight * (
        distillation(logits[:, :old], teacher_logits, t))
    self._classifier_update(loss)

  def generator_step(self) -> None:
    s, weights = self.s, self.s['generator_weights']
    self.generator.train()
    images = self.generator(torch.randn(s['generator_batch_size'], s['latent_dim'],
                                        generator=self.random))
    # The inputs of the old model's BN layers, for this forward only (hooks on
    # every teacher forward would keep the LwF and replay steps' activations too).
    bn_inputs = []
    hooks = [m.register_forward_hook(lambda m, inputs, _: bn_inputs.append((m, inputs[0])))
             for m in self.bn_layers]
    logits, features = self.teacher(images)
    for hook in hooks:
      hook.remove()
    probabilities = F.softmax(logits, -1).mean(0)
    bn = []
    for module, x in bn_inputs:
      mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
      bn.append(safe_norm(var - module.running_var) + safe_norm(mean - module.running_mean))
    half, pairs = images.shape[0] // 2, s['diversity_pairs']
    flat = images.flatten(1)
    first = torch.randperm(half, generator=self.random)[:pairs]
    second = half + torch.randperm(images.shape[0] - half, generator=self.random)[:pairs]
    log_p, log_q = F.log_softmax(flat[first], -1), F.log_softmax(flat[second], -1)
    kl = ((log_p.exp() * (log_p - log_q)).sum(-1).mean() +
          (log_q.exp() * (log_q - log_p)).sum(-1).mean())
    differences = (images[..., :-1] - images[..., 1:], images[:, :, :-1] - images[:, :, 1:],
                   images[:, :, 1:, :-1] - images[:, :, :-1, 1:],
                   images[:, :, :-1, :-1] - images[:, :, 1:, 1:])
    terms = {
        'one_hot': F.cross_entropy(logits, logits.argmax(-1)),
        'class_balance': (probabilities * probabilities.log()).sum() / np.log(10.0),
        'activation': -features.abs().mean(),
        'signed_difference': sum(d.mean().abs() for d in differences) / 4,
        'bn_statistics': torch.stack(bn).mean(),
        'diversity': -0.5 * kl,
    }
    loss = sum(weights[name] * value for name, value in terms.items())
    self.adam.zero_grad(set_to_none=True)
    loss.backward()
    self.adam.step()

  def replay(self) -> None:
    s, old, t = self.s, self.s['num_old'], self.s['temperature']
    real = self._real()
    with torch.no_grad():
      self.generator.train()
      generated = self.generator(torch.randn(s['generated_batch_size'], s['latent_dim'],
                                             generator=self.random))
      teacher_real, _ = self.teacher(real)
      teacher_generated, _ = self.teacher(generated)
    self.student.train()
    generated_logits, _ = self.student(generated)
    real_logits, _ = self.student(real)
    weight = old / s['num_seen']
    loss = (1 - weight) * F.cross_entropy(real_logits[:, old:], self.labels - old) + weight * (
        distillation(generated_logits[:, :old], teacher_generated, t) +
        distillation(real_logits[:, :old], teacher_real, t))
    self._classifier_update(loss)

  def load(self, path: str) -> None:
    arrays = np.load(path)
    for name in ('student', 'teacher', 'generator'):
      model = getattr(self, name)
      state = {key.split('/', 1)[1]: torch.from_numpy(arrays[key])
               for key in arrays.files if key.startswith(name + '/')}
      model.load_state_dict(state, strict=False)
      unset = {key for key, _ in model.named_parameters()} - set(state)
      if unset:
        raise ValueError(f'{name}: no values for {sorted(unset)[:3]}')

  def outputs(self, path: str, out: str) -> None:
    inputs = np.load(path)
    images = torch.from_numpy(inputs['images']).permute(0, 3, 1, 2)
    with torch.no_grad():
      self.student.eval()
      result = {'student': self.student(images)[0], 'teacher': self.teacher(images)[0],
                'generator': self.generator.train()(torch.from_numpy(inputs['z']))}
    np.savez(out, **{k: v.numpy() for k, v in result.items()})

  def run(self, step: str, steps: int) -> float:
    step_fn = {'finetune': self.finetune, 'lwf': self.lwf, 'generator': self.generator_step,
               'replay': self.replay}[step]
    start = time.perf_counter()
    for _ in range(steps):
      step_fn()
    return time.perf_counter() - start


def serve() -> None:
  torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
  steps = None
  for line in sys.stdin:
    request = json.loads(line)
    reply = {}
    if request['op'] == 'build':
      steps = Steps(request['setting'])
      reply = {'parameters': steps.parameters(), 'torch': torch.__version__,
               'threads': torch.get_num_threads()}
    elif request['op'] == 'load':
      steps.load(request['path'])
    elif request['op'] == 'outputs':
      steps.outputs(request['path'], request['out'])
    elif request['op'] == 'release':  # what freed memory glibc keeps (vs_pytorch.py)
      try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
      except (OSError, AttributeError):
        pass
    elif request['op'] == 'run':
      reply = {'seconds': steps.run(request['step'], request['steps'])}
    print(json.dumps(reply), flush=True)


if __name__ == '__main__':
  serve()
