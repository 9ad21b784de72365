"""The package's import graph, read from the source: no module imports
itself through others (a cycle), and no room of the pipeline reaches a later
one (test_layout.ROOMS), counting what it imports through other modules.

Every import statement counts, one inside a function too: it runs when the
function does, and then the modules must already be layered.
"""

import ast
from pathlib import Path

from test_layout import PACKAGE, ROOMS

# Modules that run on the host alone: reading and writing datasets and files.
HOST_SIDE = ("fileio", "data", "sources")
# Third-party packages of the device side: what HOST_SIDE does without.
DEVICE_STACK = ("jax", "flax", "optax", "orbax")


def module_name(path: Path) -> str:
  """'data', 'sources', 'sources.idx'; '' for the package's __init__."""
  parts = path.relative_to(PACKAGE).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
  return {module_name(p): ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")}


def _imports(name: str, tree: ast.Module, known: set[str]) -> tuple[set[str], set[str]]:
  """(the package's modules that `tree` imports, other top-level packages)."""
  internal, external = set(), set()

  def add(dotted: str):  # "mnist_jax.sources.idx" -> "sources.idx"
    dotted = dotted.removeprefix("mnist_jax").removeprefix(".")
    while dotted not in known:  # A name inside a module: the module.
      dotted = dotted.rpartition(".")[0]
    internal.add(dotted)

  package = name if (PACKAGE / name.replace(".", "/") / "__init__.py").exists() \
      else name.rpartition(".")[0]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] == "mnist_jax":
          add(alias.name)
        else:
          external.add(alias.name.split(".")[0])
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # Relative: from the module's package, up level - 1.
        base = ["mnist_jax", *filter(None, package.split("."))]
        base = base[:len(base) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
      else:
        source = node.module
      if source.split(".")[0] != "mnist_jax":
        external.add(source.split(".")[0])
        continue
      for alias in node.names:  # A submodule by name, else the module itself.
        add(f"{source}.{alias.name}")
  internal.discard(name)
  return internal, external


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
  """(module -> the package's modules it imports, module -> the other
  packages it imports). Importing a.b runs a's __init__ first; that edge is
  left out, or every package whose __init__ gathers its submodules would be
  a cycle."""
  modules = _modules()
  edges, external = {}, {}
  for name, tree in modules.items():
    edges[name], external[name] = _imports(name, tree, set(modules))
  return edges, external


def reach(edges: dict[str, set[str]]) -> dict[str, set[str]]:
  """module -> every module it imports, directly or through others."""
  closure = {}
  for start in edges:
    seen, todo = set(), [start]
    while todo:
      for target in edges[todo.pop()] - seen:
        seen.add(target)
        todo.append(target)
    closure[start] = seen
  return closure


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """A cycle for each set of modules that import each other: the shortest
  from the one that sorts first back to it, the first again at the end."""
  closure = reach(edges)
  tangles = {frozenset({m} | {n for n in closure[m] if m in closure[n]})
             for m in edges if m in closure[m]}
  return sorted(_shortest_cycle(min(tangle), edges, tangle) for tangle in tangles)


def _shortest_cycle(start: str, edges, tangle) -> list[str]:
  paths, todo = {start: [start]}, [start]
  for module in todo:  # Breadth first: todo grows as the loop goes.
    for target in sorted(edges[module] & tangle):
      if target == start:
        return paths[module] + [start]
      if target not in paths:
        paths[target] = paths[module] + [target]
        todo.append(target)
  raise AssertionError(f"{start} is in no cycle")


def test_the_graph_sees_every_form_of_import():
  edges, external = graph()
  assert "sources.idx" in edges["data"]  # from mnist_jax.sources import idx
  assert "sources.dataset" in edges["sources.npz"]  # from mnist_jax.sources.dataset import
  assert "sources.folder" in edges["predict"]  # from mnist_jax.sources.folder import
  assert "fileio" in edges["outputs"]  # from mnist_jax import fileio
  assert "sources" in edges["data"]  # inside a function: data._load's
  assert "PIL" in external["data"]  # data.resized's, inside a function
  assert "jax" in external["outputs"] and "jax" not in external["fileio"]


def test_a_cycle_is_found_and_named():
  edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"},
           "e2": {"e"}}
  assert cycles(edges) == [["a", "b", "c", "a"], ["e", "e2", "e"]]
  assert cycles({"a": {"b"}, "b": set()}) == []
  assert reach(edges)["d"] == set() and reach(edges)["a"] == {"a", "b", "c", "d"}


def test_no_module_imports_itself_through_others():
  named = [" -> ".join(cycle) for cycle in cycles(graph()[0])]
  assert named == []


def test_no_room_reaches_a_later_room_through_other_modules():
  closure = reach(graph()[0])
  reaching = {room: sorted(closure[room] & set(ROOMS[ROOMS.index(room) + 1:]))
              for room in ROOMS}
  assert {room: later for room, later in reaching.items() if later} == {}


def test_the_tools_reach_no_part_of_the_training_loop():
  """Loading a trained run (evaluate, predict, export) needs the model and
  its checkpoint, not what trains it."""
  closure = reach(graph()[0])
  for tool in ("trained", "evaluate", "predict", "export", "report", "inference"):
    assert closure[tool] & {"training", "between_epochs", "loop"} == set(), tool


def test_host_side_modules_import_no_device_stack():
  """Datasets load and files are written without JAX: a data tool's start-up,
  and no model stack pulled in to write a file."""
  edges, external = graph()
  closure = reach(edges)
  for module in edges:
    if module.split(".")[0] in HOST_SIDE:
      imported = {module} | closure[module]
      device = {m: sorted(external[m] & set(DEVICE_STACK)) for m in imported}
      assert {m: d for m, d in device.items() if d} == {}, module


def test_no_module_replaces_its_own_class():
  """`sys.modules[__name__].__class__ = ...` makes a module callable, and a
  cycle of whatever it calls; a package function does that plainly."""
  replacing = sorted(
      name for name, tree in _modules().items() for node in ast.walk(tree)
      if isinstance(node, ast.Assign) and any(
          isinstance(target, ast.Attribute) and target.attr == "__class__"
          for target in node.targets))
  assert replacing == []
