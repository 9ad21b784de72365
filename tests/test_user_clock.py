"""The user's clock: what a training run does before its first step, and
benchmarks/user_clock.py, which times `mnist-jax train` from the shell."""

import os
import subprocess
import sys

from conftest import REPO


def test_a_training_run_imports_no_plotting_library_before_it_trains():
  # matplotlib took about a second of the train command's imports
  # (python -X importtime -c "import mnist_jax.main"): it is imported when a
  # run draws its plots, after training.
  code = ("import sys, mnist_jax.main, mnist_jax.compare, mnist_jax.evaluate; "
          "print(sorted(m for m in ('matplotlib', 'PIL') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
  assert out.stdout.strip() == "[]"
