"""The package's layout: the pipeline's rooms import only the rooms before
them, and no module or function grows past a size read in one sitting.

`python tests/test_layout.py` prints each module's lines and its longest
function (the figures the split of train.py, now training.py, was measured by).
"""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_jax"
# A run's pipeline, in order (docs/how-it-runs.md).
ROOMS = ("config", "runtime", "feed", "state", "steps", "loop", "assembly", "outputs",
         "training")
# Inference of host-side images (batched, padded) is a room apart: it imports
# none of the package, and only the edges that show or return predictions
# import it; the plots (report) get their probabilities from it.
INFERENCE_USERS = {"predict", "evaluate", "api", "report"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_TRAIN_LINES = 400, 80, 250


def _tree(module: str) -> ast.Module:
  return ast.parse((PACKAGE / f"{module}.py").read_text())


def imported(module: str) -> set[str]:
  """The package's modules that `module` imports, and any `configs` import."""
  names = set()
  for node in ast.walk(_tree(module)):
    if isinstance(node, ast.ImportFrom) and node.module == "mnist_jax":
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module.removeprefix("mnist_jax."))
    elif isinstance(node, ast.Import):
      names.update(alias.name.removeprefix("mnist_jax.") for alias in node.names)
  return names


def sizes() -> dict[str, tuple[int, str, int]]:
  """module -> (lines, its longest function, that function's lines)."""
  result = {}
  for path in sorted([*PACKAGE.glob("*.py"), *PACKAGE.glob("sources/*.py")]):
    functions = [(node.end_lineno - node.lineno + 1, node.name)
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    longest, name = max(functions, default=(0, "-"))
    module = str(path.relative_to(PACKAGE).with_suffix("")).replace("/", ".")
    result[module] = (len(path.read_text().splitlines()), name, longest)
  return result


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_imports_only_the_rooms_before_it(room):
  later = set(ROOMS[ROOMS.index(room) + 1:])
  assert imported(room) & later == set()


def test_the_package_does_not_depend_on_the_repositorys_configs():
  for path in PACKAGE.glob("*.py"):
    assert not any(name == "configs" or name.startswith("configs.")
                   for name in imported(path.stem)), path.name


def test_the_edges_do_not_reach_back_into_the_pipeline():
  assert "models" not in imported("sharding")  # runtime chooses devices.
  for tool in ("trained", "evaluate", "predict", "export"):
    assert "training" not in imported(tool), tool


def _package_modules() -> set[str]:
  return {p.stem for p in PACKAGE.glob("*.py")} | {"sources", "datasets"}


def test_inference_is_a_room_of_its_own():
  assert imported("inference") & _package_modules() == set()
  users = {p.stem for p in PACKAGE.glob("*.py") if "inference" in imported(p.stem)}
  assert users == INFERENCE_USERS
  # report draws: it neither builds nor runs a model itself.
  assert imported("report") & _package_modules() <= {"data", "inference", "plots"}


def test_no_module_or_function_is_too_long_to_read_in_one_sitting():
  too_long = {module: size for module, size in sizes().items()
              if size[0] > MAX_MODULE_LINES or size[2] > MAX_FUNCTION_LINES}
  assert too_long == {}
  assert sizes()["training"][0] < MAX_TRAIN_LINES


if __name__ == "__main__":
  print(f"{'module':<18}{'lines':>6}  longest function")
  for module, (lines, name, length) in sorted(sizes().items(), key=lambda x: -x[1][0]):
    print(f"{module:<18}{lines:>6}  {name} ({length} lines)")
  sys.exit(0)
