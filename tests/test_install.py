"""What a user installs: the declared dependencies, their pins, and CI's command."""

import ast
import importlib.metadata
import re
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

# The extras CI installs (constraints.txt pins all of them); the accelerator
# extras bring JAX's own builds and are not pinned.
PINNED_EXTRAS = ("test", "tfds", "benchmark")
# Import name -> distribution, for the optional ones a core install lacks (so
# importlib.metadata cannot say).
OPTIONAL_DISTRIBUTIONS = {"torch": "torch", "tensorflow": "tensorflow-cpu",
                          "tensorflow_datasets": "tensorflow-datasets"}


def _requirements(extras=PINNED_EXTRAS) -> list[Requirement]:
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  optional = project["optional-dependencies"]
  return [Requirement(r) for r in
          project["dependencies"] + [r for e in extras for r in optional[e]]]


def _constraints() -> dict[str, str]:
  pins = {}
  for line in (REPO / "constraints.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
      name, version = line.split("==")
      pins[canonicalize_name(name)] = version
  return pins


def test_constraints_pin_every_declared_dependency_inside_its_range():
  pins = _constraints()
  for req in _requirements():
    name = canonicalize_name(req.name)
    assert name in pins, f"constraints.txt has no pin for {req}"
    assert req.specifier.contains(pins[name], prereleases=True), (
        f"constraints.txt pins {name}=={pins[name]}, outside {req}")


def _third_party_imports(folder: str) -> dict[str, str]:
  """Top-level modules imported anywhere in REPO/folder -> a file importing it,
  lazy imports inside functions included; the stdlib and local ones left out."""
  # This repository's own modules: benchmarks/step_variants.py reuses
  # tests/tolerances.py's bounds.
  local = ({"mnist_jax", "configs"} | {p.stem for p in (REPO / folder).glob("*.py")}
           | {p.stem for p in (REPO / "tests").glob("*.py")})
  found = {}
  for path in sorted((REPO / folder).glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        names = [node.module]
      else:
        continue
      for name in names:
        top = name.split(".")[0]
        if top not in sys.stdlib_module_names and top not in local:
          found.setdefault(top, path.name)
  return found


@pytest.mark.parametrize("folder", ["mnist_jax", "benchmarks"])
def test_every_import_is_a_declared_dependency(folder):
  declared = {canonicalize_name(r.name) for r in _requirements()}
  installed = importlib.metadata.packages_distributions()
  for module, path in _third_party_imports(folder).items():
    distributions = installed.get(module) or [OPTIONAL_DISTRIBUTIONS.get(module, module)]
    assert declared & {canonicalize_name(d) for d in distributions}, (
        f"{folder}/{path} imports {module} ({', '.join(distributions)}), "
        "which pyproject.toml does not declare")


def test_ci_runs_the_readme_test_command_verbatim():
  readme = (REPO / "README.md").read_text()
  first = re.search(r"Run the tests.*?```bash\n(.*?)\n```", readme, re.S).group(1)
  assert "-e '.[test]'" in first and "pytest" in first  # Core and `test` only.
  assert first in (REPO / ".ci" / "run").read_text()
