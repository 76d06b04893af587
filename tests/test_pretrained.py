"""models/pretrained.py: a torchvision/timm ResNet state dict in a .safetensors file,
written here with random weights in PyTorch's layout, computes in our ResNet what
it means in PyTorch: checked against a numpy forward of the stem and the first
block written from PyTorch's definitions (OIHW kernels, eval-mode BatchNorm with
epsilon 1e-5, max-pool padded with -inf)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from mfgr_jax.errors import UserError
from mfgr_jax.experiment import build_experiment
from mfgr_jax.models.pretrained import load_torch_resnet
from mfgr_jax.models.resnet import resnet

WIDTH = 4


def torch_resnet18(width: int = WIDTH, seed: int = 0) -> dict[str, np.ndarray]:
  """A ResNet-18 state dict as torchvision names and shapes it (random values)."""
  rng = np.random.default_rng(seed)
  weights = {}

  def conv(name, out, inp, k):
    weights[f'{name}.weight'] = rng.normal(0, (2 / (inp * k * k)) ** 0.5,
                                           (out, inp, k, k)).astype(np.float32)

  def bn(name, channels):
    weights.update({f'{name}.weight': rng.uniform(0.5, 1.5, channels).astype(np.float32),
                    f'{name}.bias': rng.normal(0, 0.1, channels).astype(np.float32),
                    f'{name}.running_mean': rng.normal(0, 0.1, channels).astype(np.float32),
                    f'{name}.running_var': rng.uniform(0.5, 1.5, channels).astype(np.float32),
                    f'{name}.num_batches_tracked': np.asarray(7, np.int64)})

  conv('conv1', width, 3, 7)
  bn('bn1', width)
  inp = width
  for stage in range(1, 5):
    out = width * 2**(stage - 1)
    for block in range(2):
      name = f'layer{stage}.{block}'
      conv(f'{name}.conv1', out, inp if block == 0 else out, 3)
      bn(f'{name}.bn1', out)
      conv(f'{name}.conv2', out, out, 3)
      bn(f'{name}.bn2', out)
      if stage > 1 and block == 0:
        conv(f'{name}.downsample.0', out, inp, 1)
        bn(f'{name}.downsample.1', out)
    inp = out
  weights['fc.weight'] = rng.normal(0, 0.01, (1000, inp)).astype(np.float32)
  weights['fc.bias'] = np.zeros(1000, np.float32)
  return weights


def conv2d(x: np.ndarray, kernel: np.ndarray, stride: int, pad: int) -> np.ndarray:
  """PyTorch's Conv2d without bias: x NHWC, kernel OIHW."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  size = kernel.shape[-1]
  height = (x.shape[1] - size) // stride + 1
  width = (x.shape[2] - size) // stride + 1
  out = np.zeros((x.shape[0], height, width, kernel.shape[0]), np.float64)
  for i in range(size):
    for j in range(size):
      window = x[:, i:i + stride * height:stride, j:j + stride * width:stride, :]
      out += window @ kernel[:, :, i, j].T
  return out


def batch_norm(x: np.ndarray, weights: dict, name: str) -> np.ndarray:
  return ((x - weights[f'{name}.running_mean']) / np.sqrt(weights[f'{name}.running_var'] + 1e-5)
          * weights[f'{name}.weight'] + weights[f'{name}.bias'])


def max_pool(x: np.ndarray) -> np.ndarray:
  """MaxPool2d(3, stride 2, padding 1)."""
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  height, width = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  return np.max([x[:, i:i + 2 * height:2, j:j + 2 * width:2, :]
                 for i in range(3) for j in range(3)], axis=0)


def stem_and_first_block(x: np.ndarray, weights: dict) -> np.ndarray:
  relu = lambda v: np.maximum(v, 0)
  x = max_pool(relu(batch_norm(conv2d(x, weights['conv1.weight'], 2, 3), weights, 'bn1')))
  y = relu(batch_norm(conv2d(x, weights['layer1.0.conv1.weight'], 1, 1), weights, 'layer1.0.bn1'))
  y = batch_norm(conv2d(y, weights['layer1.0.conv2.weight'], 1, 1), weights, 'layer1.0.bn2')
  return relu(y + x)


def template(depth: int = 18, width: int = WIDTH, num_classes: int = 5) -> tuple:
  model = resnet(depth, num_classes, width, 'imagenet')
  return model, model.init(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)), train=False)


def saved(tmp_path, weights: dict) -> str:
  path = tmp_path / 'resnet18.safetensors'
  save_file(weights, str(path))
  return str(path)


def test_loaded_weights_compute_what_they_mean_in_pytorch(tmp_path):
  weights = torch_resnet18()
  model, variables = template()
  loaded = load_torch_resnet(saved(tmp_path, weights), variables)
  images = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
  _, captured = model.apply(loaded, images, train=False, capture_intermediates=True,
                            mutable=['intermediates'])
  ours = captured['intermediates']['stage1_block1']['__call__'][0]
  np.testing.assert_allclose(ours, stem_and_first_block(images.astype(np.float64), weights),
                             rtol=1e-4, atol=1e-4)
  # The run's own head is kept; the ImageNet head (fc) is not used.
  np.testing.assert_array_equal(loaded['params']['head']['linear']['dense']['kernel'],
                                variables['params']['head']['linear']['dense']['kernel'])
  # A shortcut, and BatchNorm statistics, land where they belong.
  np.testing.assert_array_equal(
      loaded['params']['stage3_block1']['shortcut_conv']['kernel'][0, 0],
      weights['layer3.0.downsample.0.weight'][:, :, 0, 0].T)
  np.testing.assert_array_equal(loaded['batch_stats']['stage4_block2']['InputStatsBatchNorm_1']
                                ['bn']['var'], weights['layer4.1.bn2.running_var'])


@pytest.mark.parametrize('change,words', [
    (lambda w: w.pop('layer4.1.bn2.running_var'),
     'lacks 1 weight(s) of the model, e.g. batch_stats/stage4_block2/InputStatsBatchNorm_1/bn/var'),
    (lambda w: w.update({'layer1.0.conv3.weight': np.zeros((4, 4, 1, 1), np.float32)}),
     'holds layer1.0.conv3.weight, which our ResNet has no place for'),
    (lambda w: w.update({'conv1.weight': np.zeros((8, 3, 7, 7), np.float32)}),
     'conv1.weight has shape (7, 7, 3, 8) (ours: HWIO) but the model needs (7, 7, 3, 4)'),
])
def test_a_file_that_does_not_fit_is_one_line_naming_the_weight(tmp_path, change, words):
  weights = torch_resnet18()
  change(weights)
  with pytest.raises(UserError) as error:
    load_torch_resnet(saved(tmp_path, weights), template()[1])
  assert words in str(error.value) and '\n' not in str(error.value)


def test_a_file_of_another_depth_or_format_is_refused(tmp_path):
  with pytest.raises(UserError, match='lacks .* weight'):
    load_torch_resnet(saved(tmp_path, torch_resnet18()), template(depth=34)[1])
  broken = tmp_path / 'broken.safetensors'
  broken.write_bytes(b'not a safetensors file')
  with pytest.raises(UserError, match='cannot be read'):
    load_torch_resnet(str(broken), template()[1])


def test_task_0_starts_from_the_file_when_the_config_names_it(smoke_config, tmp_path):
  weights = torch_resnet18()
  smoke_config.model.update(dict(stem='imagenet', init_weights=saved(tmp_path, weights)))
  smoke_config.data.synthetic.update(dict(channels=3, image_size=32))
  experiment = build_experiment(smoke_config, tmp_path / 'run')
  params, batch_stats = experiment.new_model(2, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(params['stem_conv']['kernel'],
                                weights['conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(batch_stats['stem_bn']['bn']['mean'], weights['bn1.running_mean'])
