"""lwm: Grad-CAM against its closed form on a pooled linear head, and a run that
records the attention distillation term. (L_AD itself: test_losses.py.)"""

import jax
import jax.numpy as jnp
import numpy as np

from mfgr_jax import train
from mfgr_jax.methods import lwm
from mfgr_jax.models.resnet import classify, resnet

from conftest import scalars


def test_grad_cam_equals_the_closed_form_of_a_pooled_linear_head():
  # Through global average pooling and a linear head, d logit_c / d A[h, w, k] = W[k, c] / (H W),
  # so Grad-CAM is relu(sum_k W[k, c] A[h, w, k]) / (H W).
  model = resnet(18, 5, width=4)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False)
  images = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 3))
  forward, _ = classify(model, variables, images, train=False)
  classes = jnp.asarray([4, 0, 2])
  cams = lwm.grad_cam(forward, classes)
  kernel = variables['params']['head']['linear']['dense']['kernel']
  height, width = forward.feature_map.shape[1:3]
  expected = jax.nn.relu(jnp.einsum('nhwk,kn->nhw', forward.feature_map, kernel[:, classes]))
  np.testing.assert_allclose(cams, expected / (height * width), rtol=1e-5, atol=1e-7)
  assert cams.shape == (3, height, width) and float(jnp.max(cams)) > 0
  # The map the loss uses is the model's own last stage.
  np.testing.assert_allclose(forward.features, jnp.mean(forward.feature_map, (1, 2)), rtol=1e-6)


def test_lwm_runs_and_records_its_attention_loss(smoke_config, tmp_path):
  smoke_config.method = 'lwm'
  smoke_config.scenario.num_tasks = 2
  results = train.run(smoke_config, str(tmp_path))
  assert results['method'] == 'lwm' and len(results['accuracy']) == 2
  assert results['accuracy'][1] > 100 / 6  # better than chance over 6 classes
  attention = scalars(tmp_path, 'classifier/attention')
  assert attention and np.all(np.isfinite(attention)) and max(attention) > 0
