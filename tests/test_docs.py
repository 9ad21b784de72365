"""The README and the pages of docs/: short, linked, and naming only what exists.

A page goes stale when the code moves under it: a field or a flag renamed, a
module split, a record replaced. Each test reads every page (README.md and
docs/*.md) as a reader would, and checks one kind of name against the code:
links and anchors, `--config.<field>` and `config.<field>`, the flags of each
`mnist-jax COMMAND` (or `python -m mnist_jax.<module>`) shown, the `.py`
files and JSON records named, and the names the Python examples use.
The Python API's example runs in tests/test_api.py, the README's test
command is checked against .ci/run in tests/test_install.py, and
docs/config.md against mnist_jax/fields.py in tests/test_console.py.
"""

import ast
import functools
import importlib
import json
import inspect
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from mnist_jax import __main__ as dispatcher
from mnist_jax import config as config_lib

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
MAX_README_LINES = 250  # Issue 23: what a newcomer reads.

_FENCE = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", re.M | re.S)
_INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")  # A span may wrap once.
# absl's own flags, which every command accepts (cli.py answers the help ones).
_ABSL_FLAGS = {"help", "helpshort", "helpfull", "verbosity"}
# Files a run writes into its workdir, not files of this repository.
_WORKDIR_FILES = {"summary.json", "eval.json", "comparison.json", "perfetto_trace.json"}


def _rel(page):
  return str(page.relative_to(REPO))


def _code(text: str) -> list[tuple[str, str]]:
  """Every fenced block (language, text) and inline span ('', text) of a page,
  a fenced block's backslash-continued lines joined."""
  blocks = [(lang, body.replace("\\\n", " ")) for lang, body in _FENCE.findall(text)]
  return blocks + [("", span.replace("\n", " ")) for span in _INLINE.findall(_FENCE.sub("", text))]


def _prose(text: str) -> str:
  """The page without its code, where a `[text](link)` is a link."""
  return _INLINE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
  """GitHub's anchor for a heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_is_at_most_250_lines():
  lines = len(README.read_text().splitlines())
  assert lines <= MAX_README_LINES, (
      f"README.md has {lines} lines, over {MAX_README_LINES}: move reference "
      "material into a page under docs/ and link it")


def test_the_readme_opens_with_the_two_commands():
  # Title, a line of what it is, then the set-up-and-run and the test command.
  blocks = [body for lang, body in _FENCE.findall(README.read_text()) if lang == "bash"]
  assert "mnist_jax.main --config=" in blocks[0] and "-m pytest" in blocks[1]
  before = README.read_text().partition("```")[0]
  assert "## " not in before and len(before.splitlines()) <= 10


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_points_to_a_file_and_heading_that_exist(page):
  for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
    if re.match(r"[a-z]+:", target):  # https:, mailto:
      continue
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    assert linked.exists(), f"{_rel(page)} links {target}: no such file"
    if anchor:
      headings = re.findall(r"^#+ (.*)$", _FENCE.sub("", linked.read_text()), re.M)
      assert anchor in {_slug(h) for h in headings}, (
          f"{_rel(page)} links {target}: no such heading in {path or _rel(page)}")


def test_every_docs_page_is_linked_from_the_readme():
  linked = {(REPO / t.partition("#")[0]).resolve()
            for t in re.findall(r"\]\(([^)\s]+)\)", _prose(README.read_text()))}
  assert not [_rel(p) for p in PAGES[1:] if p.resolve() not in linked]


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_config_field_named_exists(page):
  fields = set(config_lib.flat(config_lib.defaults()))
  named = set()
  for _, code in _code(page.read_text()):
    named |= set(re.findall(r"--config\.([a-z_][\w.]*\w)", code))
    # `config.width` in prose; not config.py, nor `c.model` of an example.
    named |= {n for n in re.findall(r"(?<![\w./-])config\.([a-z_]\w*(?:\.[a-z_]\w*)?)", code)
              if n != "py"}
  unknown = sorted(n for n in named if n not in fields)
  assert not unknown, f"{_rel(page)} names config fields that do not exist: {unknown}"


_FLAGS_OF_COMMANDS = """
import importlib, json, sys
from absl import flags
from mnist_jax import __main__ as dispatcher
found = {}
for command, module_name in dispatcher.COMMANDS.items():
  module = importlib.import_module(module_name)
  found[command] = sorted(h.name for h in vars(module).values()
                          if isinstance(h, flags.FlagHolder))
json.dump(found, sys.stdout)
"""


@functools.cache
def _command_flags() -> dict[str, set[str]]:
  """Each command's flags: those its module holds (what its --help lists).

  Read in a child process: importing the commands here would register
  main's required --config in this process's absl flags, and every later
  test that parses a command's flags in-process would then fail on it."""
  result = subprocess.run([sys.executable, "-c", _FLAGS_OF_COMMANDS], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=True)
  return {command: _ABSL_FLAGS | set(names)
          for command, names in json.loads(result.stdout).items()}


def _commands(code: str):
  """(command, the flags given to it) for each mnist-jax command in `code`."""
  modules = {m: c for c, m in dispatcher.COMMANDS.items()}
  pattern = (r"(?:mnist-jax|python3? -m mnist_jax(?!\.))\s+([A-Za-z]+)"
             r"|python3? -m (mnist_jax\.\w+)")
  for match in re.finditer(pattern, code):
    if match.group(1):
      command = match.group(1)
      if command.isupper():  # `mnist-jax COMMAND --help`: any command.
        continue
    elif match.group(2) in modules:
      command = modules[match.group(2)]
    else:
      continue  # Another module's command line (config_reference, ...).
    # The command's words run to the end of its line or shell command.
    words = re.split(r"\s#|&&|\|\||[|;\n]", code[match.end():], maxsplit=1)[0]
    yield command, re.findall(r"(?<!\S)--([A-Za-z_][\w.]*)", words)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_command_shown_is_a_command_and_takes_its_flags(page):
  command_flags = _command_flags()
  seen = 0
  for _, code in _code(page.read_text()):
    for command, given in _commands(code):
      seen += 1
      assert command in command_flags, f"{_rel(page)}: no command mnist-jax {command}"
      unknown = [f for f in given if f not in command_flags[command]
                 and not (command == "train" and f.startswith("config."))]
      assert not unknown, f"{_rel(page)}: mnist-jax {command} has no flag {unknown}"
  if page == README:
    assert seen >= 10  # The tour: every command, as a reader runs it.


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_file_named_exists(page):
  # Python files by their path, or by their name in the package, the configs,
  # the benchmarks or the tests; JSON records anywhere under benchmarks/results.
  roots = [REPO, REPO / "mnist_jax", REPO / "mnist_jax" / "sources", REPO / "configs",
           REPO / "benchmarks", REPO / "tests"]
  records = {p.name for p in (REPO / "benchmarks" / "results").rglob("*.json")}
  missing = []
  text = page.read_text()
  # The file of a component spec (`my_parts.py:Net`) is the reader's own.
  user_files = set(re.findall(r"((?:[\w-]+/)*[\w-]+\.py):\w", text))
  for _, code in _code(text):
    for name in re.findall(r"(?<![\w./<-])((?:[\w-]+/)*[\w-]+\.py)\b", code):
      if name not in user_files and not any((root / name).is_file() for root in roots):
        missing.append(name)
    for path in re.findall(r"(?<![\w.<-])(\w[\w./-]*\.json)\b", code):  # not `-seed1.json`
      name = path.rsplit("/", 1)[-1]
      if name not in _WORKDIR_FILES and name not in records:
        missing.append(path)
  assert not missing, f"{_rel(page)} names files that do not exist: {sorted(set(missing))}"


def _python_examples():
  for page in PAGES:
    for lang, body in _FENCE.findall(page.read_text()):
      if lang == "python":
        yield page, textwrap.dedent(body)  # Indented in a list: as pasted.
      # A heredoc: `python - <<'PY'` ... `PY`.
      yield from ((page, m) for m in re.findall(r"<<'PY'\n(.*?)^PY$", body, re.M | re.S))


@pytest.mark.parametrize("page,code", list(_python_examples()),
                         ids=lambda x: _rel(x) if hasattr(x, "relative_to") else "")
def test_every_python_example_names_what_exists_and_calls_it_as_defined(page, code):
  # Modules imported from mnist_jax (and configs), the attributes used of
  # them, and the arguments of each call, bound to the function's signature.
  tree = ast.parse(code, _rel(page))
  modules = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module in ("mnist_jax", "configs"):
      for alias in node.names:
        modules[alias.asname or alias.name] = importlib.import_module(
            f"{node.module}.{alias.name}")
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in modules):
      module = modules[node.value.id]
      assert hasattr(module, node.attr), (
          f"{_rel(page)}: {module.__name__} has no {node.attr}")
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name) and node.func.value.id in modules
        and not any(isinstance(a, ast.Starred) for a in node.args)
        and all(k.arg for k in node.keywords)):
      function = getattr(modules[node.func.value.id], node.func.attr)
      try:
        inspect.signature(function).bind(*node.args, **{k.arg: k for k in node.keywords})
      except TypeError as e:
        pytest.fail(f"{_rel(page)}: {ast.unparse(node)}: {e}")


def test_the_model_of_extending_it_builds_and_maps_images_to_logits(monkeypatch):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from mnist_jax import models, registry  # pylint: disable=g-import-not-at-top
  (code,) = [b for lang, b in _FENCE.findall((DOCS / "extending.md").read_text())
             if lang == "python" and "models.register" in b]
  monkeypatch.setitem(registry.entries("model"), "linear", None)  # Forgotten after.
  exec(compile(textwrap.dedent(code), "docs/extending.md", "exec"),  # pylint: disable=exec-used
       {"nnx": nnx, "models": models})
  model = registry.resolve("model", "linear").target(10, rngs=nnx.Rngs(0))
  assert model(jnp.zeros((2, 28, 28, 1))).shape == (2, 10)
