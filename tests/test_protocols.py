"""protocols.check on what the other plugin tests do not reach: a model whose
declared classifier names none of its layers (freeze=features would then
freeze every parameter and train nothing, silently)."""

import textwrap

import pytest

from mnist_jax import config as config_lib
from mnist_jax import protocols
from mnist_jax.errors import SpecError

_PLUGIN = textwrap.dedent('''
    from flax import nnx

    class Net(nnx.Module):
      classifier = "out"
      def __init__(self, num_classes, *, rngs, input_shape):
        h, w, c = input_shape
        self.hidden = nnx.Linear(h * w * c, 16, rngs=rngs)
        self.out = nnx.Linear(16, num_classes, rngs=rngs)
      def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))

    class Misnamed(Net):
      classifier = "head"

    class NotALayer(Net):
      classifier = "relu_after"
      relu_after = "just text"
''')


@pytest.mark.parametrize("name,error", [
    ("Net", None),
    ("Misnamed", "declares classifier='head', which is no layer of it"),
    ("NotALayer", "declares classifier='relu_after', which is no layer of it"),
])
def test_a_declared_classifier_must_be_a_layer_with_parameters(tmp_path, name, error):
  (tmp_path / "parts.py").write_text(_PLUGIN)
  config = config_lib.defaults()
  config.model = f"{tmp_path / 'parts.py'}:{name}"
  if error is None:
    protocols.check(config, 10, (28, 28, 1))
    return
  with pytest.raises(SpecError, match=error) as raised:
    protocols.check(config, 10, (28, 28, 1))
  assert "one of hidden, out" in str(raised.value)
  assert raised.value.exit_status == 2


def test_a_spec_missing_either_part_says_the_two_forms():
  from mnist_jax import registry  # pylint: disable=g-import-not-at-top
  for spec in (":Net", "parts.py:"):
    with pytest.raises(SpecError, match="module.path:attribute or path/to/file.py"):
      registry.resolve("model", spec, label="model")


def test_sweeping_what_a_users_optimizer_does_not_declare_says_how_to_declare_it(
    tmp_path):
  from mnist_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  (tmp_path / "opt.py").write_text(
      "import optax\ndef make(learning_rate, config):\n"
      "  return optax.sgd(learning_rate)\n")
  config = config_lib.defaults()
  config.optimizer = f"{tmp_path / 'opt.py'}:make"
  config.sweep.weight_decay = "0,0.001"
  with pytest.raises(UserError, match=r"does not declare weight_decay; set "
                     r"hyperparameters = \('weight_decay',\)"):
    config_lib.validate(config)
