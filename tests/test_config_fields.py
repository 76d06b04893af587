"""config_fields.py and the check of a whole config: every leaf field of the
config has a rule, and a hostile table holds at least one bad value for each of
them. Each row goes through `train.run` (what the command line calls) and must
be refused in one line naming the field and the value, before the workdir is
made or any data is loaded. The rules across fields get rows of their own; the
command line's exit status and one-line stderr are in end_to_end/test_main.py."""

import math

import ml_collections
import pytest

from configs import default
from mfgr_jax import config_fields as F
from mfgr_jax import run_config
from mfgr_jax import experiment, methods, train
from mfgr_jax.errors import UserError

NEGATIVE_WEIGHT = [-1.0, math.nan]
# Bad values of every leaf field: wrong types, out of range, unknown choices.
HOSTILE = {
    'seed': [-1, 2**32, 1.5, '0', True],
    'method': ['ewc2', '', 3],
    'init_from': [3, None],
    'data.name': ['mnist', '', None],
    'data.data_dir': [0],
    'data.manual_dir': [None],
    'data.download': ['yes', 1],
    'data.max_train_per_class': [-1, 2.5],
    'data.max_test_per_class': [-1],
    'data.image_size': [-1, 32.0],
    'data.crop_padding': [-1, 1.5],
    'data.flip': [0, 'True'],
    'data.synthetic.num_classes': [0, -3],
    'data.synthetic.image_size': [0, -8],
    'data.synthetic.channels': [0, 2, 4],
    'data.synthetic.train_per_class': [0],
    'data.synthetic.test_per_class': [0, -1],
    'data.synthetic.seed': [-1, 2**32],
    'scenario.class_order': ['random', '1,,2', '1;2', '-1,2', 3],
    'scenario.class_order_seed': [-5, 2**33],
    'scenario.base_classes': [-2],
    'scenario.increment': [0, -2],
    'scenario.num_tasks': [-1],
    'model.depth': [50, 0, '18'],
    'model.width': [0, -16],
    'model.stem': ['foo'],
    'model.compute_dtype': ['float16'],
    'model.init_weights': [3, None],
    'train.epochs': [0, -3, 1.5],
    'train.batch_size': [0],
    'train.learning_rate': [0.0, -0.1, math.nan, math.inf],
    'train.momentum': [-0.1, 1.0],
    'train.weight_decay': [-1e-4],
    'train.init_epochs': [-1, 1.5],
    'train.init_learning_rate': [-0.1, math.nan],
    'train.schedule': ['step', 'Cosine'],
    'train.milestones': ['120,80', '0.5,100', '0,4', 'x', 80],
    'train.lr_decay': [0, -0.1],
    'eval_batch_size': [0],
    'on_nonfinite': ['ignore'],
    'per_method': [3, {'abd': 3}, {'abd': {'train': {'epochs': [1]}}}],
    'log_every_steps': [0],
    'checkpoint_every_steps': [0, -1],
    'generator.steps': [0],
    'generator.sample_statistics': ['eval', True],
    'generator.warm_start': ['yes', 1],
    'generator.batch_size': [0, -128],
    'generator.learning_rate': [0.0],
    'generator.latent_dim': [0],
    'generator.hidden': [0],
    'generator.architecture': ['gan'],
    'generator.image_size': [-1],
    'generator.diversity_pairs': [0],
    'generator.log_every_steps': [0],
    **{f'generator.weights.{term}': NEGATIVE_WEIGHT for term in (
        'one_hot', 'class_balance', 'activation', 'signed_difference', 'bn_statistics',
        'diversity')},
    'deepinversion.batches': [0],
    'deepinversion.batch_size': [0],
    'deepinversion.iterations': [0],
    'deepinversion.learning_rate': [-0.05],
    'deepinversion.jitter': [-1],
    'deepinversion.flip': ['no'],
    'deepinversion.log_every_steps': [0],
    **{f'deepinversion.weights.{term}': NEGATIVE_WEIGHT for term in (
        'target_ce', 'bn_statistics', 'total_variation', 'l2_prior')},
    'replay.generated_batch_size': [0, -4],
    'replay.balance': ['even'],
    'replay.single_pass': ['no'],
    'distillation.temperature': [0.0, -2.0],
    'distillation.scale_by_t_squared': [1],
    'ewc.weight': [-1.0],
    'ewc.accumulate': ['max'],
    'ewc.importance_batch_size': [0],
    'mas.weight': [-1.0],
    'mas.accumulate': ['max'],
    'mas.output_norm': ['l3'],
    'mas.importance_batch_size': [0],
    'icarl.memory_size': [0],
    'lwm.attention_weight': [-1.0],
    'muc.auxiliary': ['svhn'],
    'muc.side_heads': [0],
    'muc.side_epochs': [0],
    'muc.side_learning_rate': [0.0],
    'muc.side_batch_size': [0],
    **{f'{section}.generator_weights.{term}': NEGATIVE_WEIGHT for section in ('abd', 'rdfcil')
       for term in ('content', 'normalised_balance', 'bn_kl', 'smoothness')},
    'abd.content_temperature': [0.0],
    'abd.feature_distillation_weight': [-0.1],
    'rdfcil.content_temperature': [0.0],
    'rdfcil.lambda_ce': [-0.5],
    'rdfcil.lambda_hkd': [-1.0],
    'rdfcil.lambda_rkd': [-1.0],
    'rdfcil.head_phase_fraction': [0.0],
    'rdfcil.head_learning_rate_scale': [0.0],
    'rdfcil.head_ce_weight': [-0.5],
    'rdfcil.class_count_batches': [0],
}
ROWS = [(path, value) for path, values in HOSTILE.items() for value in values]


@pytest.fixture
def no_data(monkeypatch):
  """Fails the test if any data is loaded."""

  def refuse(*args, **kwargs):
    raise AssertionError('data was loaded before the config was refused')

  monkeypatch.setattr(experiment, 'load_dataset', refuse)


def with_value(config: ml_collections.ConfigDict, path: str, value) -> ml_collections.ConfigDict:
  """`config` with the dotted field `path` set to `value`, of any type, as a config
  file that builds its own ConfigDict can (assignment would enforce the type)."""
  tree = config.to_dict()
  *sections, name = path.split('.')
  node = tree
  for section in sections:
    node = node[section]
  node[name] = value
  return ml_collections.ConfigDict(tree)


def refusal(config: ml_collections.ConfigDict, workdir) -> str:
  """The one-line message with which `train.run` refuses `config` before making `workdir`."""
  with pytest.raises(UserError) as error:
    train.run(config, str(workdir))
  message = str(error.value)
  assert '\n' not in message, message
  assert not workdir.exists(), 'the workdir was made before the config was refused'
  return message


def test_every_leaf_field_is_declared_with_a_rule():
  """A plain value in get_fields (or a method's CONFIG) is a field without a rule."""

  def plain_values(tree, prefix=''):
    for name, value in tree.items():
      if isinstance(value, dict):
        yield from plain_values(value, f'{prefix}{name}.')
      elif not isinstance(value, F.Field):
        yield prefix + name

  assert list(plain_values(run_config.get_fields())) == []


def test_the_defaults_pass_their_own_rules_and_are_the_config():
  fields = run_config.get_fields()
  config = default.get_config()
  F.check(config, fields)
  assert set(F.leaves(fields)) == {path for path in HOSTILE}, (
      'every leaf field needs rows in HOSTILE (and every row a field)')


def test_a_config_with_its_defaults_is_accepted_with_every_method(smoke_config):
  for method in F.leaves(run_config.get_fields())['method'].default, 'mfgr', 'rdfcil', 'muc_mas':
    smoke_config.method = method
    assert experiment.check_config(smoke_config).name == method


@pytest.mark.parametrize('path,value', ROWS, ids=[f'{p}={v!r}' for p, v in ROWS])
def test_a_bad_value_of_any_field_is_refused_in_one_line_before_any_work(
    path, value, smoke_config, tmp_path, no_data):
  message = refusal(with_value(smoke_config, path, value), tmp_path / 'workdir')
  assert message.startswith(f'{path}={value!r} is not allowed: it must be '), message
  assert f'--config.{path}' in message


@pytest.mark.parametrize('change,words', [
    (dict(scenario__increment=4), 'cannot split 6 classes into a base task of 4'),
    (dict(scenario__num_tasks=9), 'scenario.num_tasks=9 but the scenario has 3 tasks'),
    (dict(train__schedule='multistep'), "train.schedule='multistep' with train.milestones=''"),
    (dict(train__milestones='80,120'), "milestones belong to the multistep schedule"),
    (dict(scenario__class_order='0,1,2,3,4,99'), 'label(s) [99] outside 0..5'),
    (dict(scenario__class_order='0,1,1,2'), 'lists label(s) [1] more than once'),
    (dict(method='mfgr', generator__diversity_pairs=20), 'needs generator.batch_size >= 40'),
    (dict(method='mfgr', data__synthetic__image_size=30), "'dafl' generator needs an image size"),
    (dict(method='abd', generator__architecture='pyramid', data__synthetic__image_size=24),
     "'pyramid' generator needs an image size of 4 times a power of 2"),
    (dict(data__name='caltech101'), 'caltech101 has images of different sizes'),
    (dict(data__synthetic__image_size=1), 'set --config.data.crop_padding below 1, or '
     '--config.data.synthetic.image_size above 2'),
    (dict(data__crop_padding=16), 'data.crop_padding=16 is as large as the 16x16 images'),
    (dict(data__synthetic__image_size=2**16), 'needs at least 3.07e+03 GB of host memory'),
    (dict(data__synthetic__train_per_class=2**31), 'or lower the images per class'),
    (dict(model__width=2**17), 'the parameters alone do not fit); lower --config.model.width'),
    (dict(train__batch_size=2**32), 'images fit beside the parameters); lower --config.train.batch_size'),
    (dict(eval_batch_size=2**36), 'a step with eval_batch_size=68719476736'),
    (dict(method='mfgr', generator__batch_size=2**32), 'a step with generator.batch_size='),
    (dict(method='mfgr', generator__latent_dim=2**28), 'or generator.latent_dim'),
    (dict(method='deepinversion', deepinversion__batches=2**24), 'the deepinversion pool of '),
    (dict(init_from='/nonexistent/run'), 'init_from=/nonexistent/run has no task-0 checkpoint'),
    (dict(model__init_weights='/nonexistent/resnet18.safetensors'),
     'model.init_weights=/nonexistent/resnet18.safetensors is not a file'),
])
def test_rules_across_fields_refuse_before_any_work(change, words, smoke_config, tmp_path,
                                                    no_data):
  for path, value in change.items():
    smoke_config = with_value(smoke_config, path.replace('__', '.'), value)
  assert words in refusal(smoke_config, tmp_path / 'workdir')


def test_a_missing_field_names_the_config_and_the_field(smoke_config, tmp_path, no_data):
  tree = smoke_config.to_dict()
  del tree['train']['momentum']
  message = refusal(ml_collections.ConfigDict(tree), tmp_path / 'workdir')
  assert message.startswith('the config lacks the field train.momentum (default 0.9)'), message


def test_an_unknown_field_is_refused_with_the_nearest_name(smoke_config, tmp_path, no_data):
  tree = smoke_config.to_dict()
  tree['train']['epoch'] = 3
  message = refusal(ml_collections.ConfigDict(tree), tmp_path / 'workdir')
  assert 'the config has the unknown field train.epoch (did you mean train.epochs?)' in message


def test_a_value_where_a_section_belongs_is_refused(smoke_config, tmp_path, no_data):
  message = refusal(with_value(smoke_config, 'model', 18), tmp_path / 'workdir')
  assert message.startswith('model=18 must be a section with the fields depth, width'), message


def test_every_problem_is_counted_but_one_line_is_shown(smoke_config, tmp_path, no_data):
  config = with_value(with_value(smoke_config, 'train.epochs', 0), 'model.width', 0)
  message = refusal(config, tmp_path / 'workdir')
  assert message.endswith('(and 1 more problem(s) after it)'), message


@pytest.mark.parametrize('field,good,bad', [
    (F.integer(0, minimum=2, maximum=4), [2, 3, 4], [1, 5, 3.0, True, '3']),
    (F.number(0.5, below=1.0), [0, 0.0, 0.99], [1.0, -0.1, math.nan, math.inf, False]),
    (F.positive_number(1.0), [1e-9, 3], [0, 0.0, -1.0]),
    (F.boolean(True), [True, False], [0, 1, 'True', None]),
    (F.choice('a', ('a', 'b')), ['a', 'b'], ['c', None, 0]),
    (F.text('', 'digits', str.isdigit), ['12'], ['1a', 12]),
    (F.seed(0), [0, 2**32 - 1], [-1, 2**32]),
])
def test_each_kind_of_rule_accepts_exactly_what_it_says(field, good, bad):
  assert all(field.accepts(value) for value in good)
  assert not any(field.accepts(value) for value in bad)


def test_defaults_and_leaves_of_a_tree_of_fields():
  fields = {'a': F.positive_integer(3), 'b': {'c': F.boolean(False), 'd': {'e': F.text('x')}}}
  assert F.defaults(fields).to_dict() == {'a': 3, 'b': {'c': False, 'd': {'e': 'x'}}}
  assert list(F.leaves(fields)) == ['a', 'b.c', 'b.d.e']


def test_an_added_field_is_left_out_of_the_fingerprint_at_its_default(smoke_config):
  # Workdirs made before generator.sample_statistics existed still resume; a run that
  # sets it to another value has it in its fingerprint, so theirs differ.
  fields = {'steps': F.positive_integer(300), 'sample_statistics': F.added(
      F.choice('batch', ('batch', 'running'))), 'weights': {'one_hot': F.number(1.0)}}
  values = {'steps': 300, 'sample_statistics': 'batch', 'weights': {'one_hot': 1.0}}
  assert F.fingerprint(values, fields) == {'steps': 300, 'weights': {'one_hot': 1.0}}
  assert F.fingerprint({**values, 'sample_statistics': 'running'}, fields)[
      'sample_statistics'] == 'running'
  method = methods.get_method('abd')
  before = method.fingerprint(smoke_config)
  assert 'sample_statistics' not in before['generator']
  smoke_config.generator.sample_statistics = 'running'
  assert method.fingerprint(smoke_config)['generator'] == {**before['generator'],
                                                           'sample_statistics': 'running'}
