"""The README's own components (`my_parts.py`) train as the README says.

The README shows a file of a reader's own model, optimizer, loss and
augmentation, and the command that trains them. This writes that file as
the README has it into a folder of its own, runs that command there (on the
packaged mnist160, one epoch), and checks the run used each component: the
summary names the specs, and the squared loss, which is at most 2 per
example where cross-entropy of an untrained model is about ln 10, is what
the epoch's training loss was. Catches a README example that no longer
runs, and a command whose flags do not reach the components.
"""

import json
import re
import shlex

from conftest import REPO, run_module


def _readme_parts() -> tuple[str, list[str]]:
  readme = (REPO / "README.md").read_text()
  code = re.search(r"```python\n(# my_parts\.py.*?)```", readme, re.S).group(1)
  command = re.search(r"```bash\n(mnist-jax train [^\n]*my_parts\.py[^\n]*)\n```",
                      readme).group(1)
  return code, shlex.split(command)[2:]


def test_the_readme_components_train_with_the_readme_command(tmp_path):
  code, flags = _readme_parts()
  (tmp_path / "my_parts.py").write_text(code)
  flags = [f.replace("configs/", f"{REPO}/configs/") for f in flags]
  result = run_module("mnist_jax.main", *flags, "--config.dataset=mnist160",
                      "--config.num_epochs=1", "--config.batch_size=16",
                      "--config.plots=False", f"--workdir={tmp_path / 'run'}",
                      cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  config = summary["config"]
  assert (config["model"], config["optimizer"], config["loss"], config["augment"]) == (
      "my_parts.py:Net", "my_parts.py:adam_tx", "my_parts.py:squared",
      "my_parts.py:noise")
  (record,) = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  # The squared distance of two probability vectors is at most 2.
  assert 0 < record["train_loss"] <= 2.0
