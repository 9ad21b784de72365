"""`mnist-jax COMMAND [flags]`, the same as `python -m mnist_jax COMMAND [flags]`.

  mnist-jax train --config=configs/mnist.py
  mnist-jax evaluate --workdir=runs/mnist
  mnist-jax predict --workdir=runs/mnist digit.png
  mnist-jax export --workdir=runs/mnist
  mnist-jax compare configs/mnist.py configs/fashion.py --seeds=3

`mnist-jax COMMAND --help` lists the command's flags;
`mnist-jax train --config=configs/mnist.py --show_config` every config field.
"""

import importlib
import sys

COMMANDS = {
    "train": "mnist_jax.main",
    "evaluate": "mnist_jax.evaluate",
    "predict": "mnist_jax.predict",
    "export": "mnist_jax.export",
    "compare": "mnist_jax.compare",
}


def main():
  if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    asked_for_help = len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help", "help")
    print(__doc__.strip(), file=sys.stdout if asked_for_help else sys.stderr)
    if not asked_for_help:
      given = f"unknown command '{sys.argv[1]}'; " if len(sys.argv) > 1 else ""
      print(f"error: {given}choose one of {', '.join(COMMANDS)}", file=sys.stderr)
    sys.exit(0 if asked_for_help else 1)
  command = sys.argv.pop(1)
  sys.argv[0] = f"mnist-jax {command}"
  # Imported only now: each command defines its own flags.
  module = importlib.import_module(COMMANDS[command])
  from mnist_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(module.main)


if __name__ == "__main__":
  main()
