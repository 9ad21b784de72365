"""Regenerates the tables of benchmarks/README.md from the JSON records.

Command: python benchmarks/tables.py [--readme=benchmarks/README.md]
         [--results_dir=benchmarks/results]
Everything between the README's `<!-- tables:begin -->` and
`<!-- tables:end -->` lines is rewritten; the prose around them is kept.
Per machine folder (results/<backend>-<device kind>/) each harness section
comes from the newest record that measured it; then the other benchmarks'
records.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_args as ba  # pylint: disable=g-import-not-at-top,wrong-import-position

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"
# Sections shown from the newest record that has them; time to accuracy is
# shown per speedrun config instead.
HARNESS_SECTIONS = ("throughput", "strategies", "scaling", "members", "memory")


def load_records(results_dir: Path = RESULTS) -> dict[str, list[tuple[str, dict]]]:
  """{machine folder: [(file name, record)]}, oldest first within a folder."""
  found = {}
  for path in sorted(results_dir.glob("*/*.json")):
    record = json.loads(path.read_text())
    found.setdefault(path.parent.name, []).append((path.name, record))
  for records in found.values():
    records.sort(key=lambda item: item[1]["machine"]["date"])
  return found


def _rate(stats: dict) -> str:
  return f"{stats['median']:,.0f} ({stats['min']:,.0f}..{stats['max']:,.0f})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return (["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
          + ["| " + " | ".join(row) + " |" for row in rows] + [""])


def _machine_line(name: str, record: dict) -> str:
  m = record["machine"]
  return (f"`{name}`: {m['backend']} {m['device_kind']}, {m['device_count']} "
          f"device(s), CPU {m['cpu']} ({m['cpu_count']} cores), jax {m['jax']}, "
          f"flax {m['flax']}, {m['date'][:10]}, commit {str(m['git_commit'])[:8]}"
          + (f", XLA_FLAGS `{m['xla_flags'].strip()}`" if m["xla_flags"].strip() else ""))


def _harness(name: str, record: dict, sections: list[str]) -> list[str]:
  """The tables of `sections` from one harness record."""
  lines = [f"#### {', '.join(sections)} ({name})", "", _machine_line(name, record), ""]
  record = {k: v for k, v in record.items() if k not in HARNESS_SECTIONS or k in sections}
  if "throughput" in record:
    lines += ["Training throughput, images/s: median of "
              f"{record['repeats']} windows (min..max); compile seconds.", ""]
    lines += _table(
        ["model", "batch", "dtype", "devices", "images/s", "steps/call",
         "compile train", "compile eval"],
        [[r["model"], str(r["batch_size"]), r.get("dtype", "float32"),
          str(r.get("device_count", "")),
          _rate(r["images_per_sec"]),
          str(r["steps_per_call"]), f"{r['compile_train_seconds']:.2f}",
          f"{r['compile_eval_seconds']:.2f}"] for r in record["throughput"]])
  if "strategies" in record:
    s = record["strategies"]
    lines += [f"Execution strategies, {s['model']} batch {s['batch_size']}, "
              f"windows of {s['window_steps']} steps:", ""]
    lines += _strategies_table(s["results"])
  if "scaling" in record:
    lines += ["Scaling over devices (virtual CPU devices on CPU), images/s:", ""]
    lines += _table(
        ["model", "batch", "devices", "images/s", "vs 1 device"],
        [[r["model"], str(r["batch_size"]), str(r["device_count"]),
          _rate(r["images_per_sec"]),
          "" if "speedup_over_1_device" not in r else
          f"{r['speedup_over_1_device']:.2f}x"
          + ("" if r["differs_from_1_device"] or r["device_count"] == 1
             else " (no difference)")] for r in record["scaling"]])
  if "members" in record:
    lines += ["N models at once (config.num_seeds=N, one program; loop: "
              "config.member_loop) against N sequential runs: training "
              "images/s summed over the members.", ""]
    lines += _table(
        ["model", "batch", "devices", "members", "loop", "images/s", "vs sequential"],
        [[r["model"], str(r["batch_size"]), str(r["device_count"]),
          str(r["members"]), r.get("member_loop", "vmap") if r["members"] > 1 else "",
          _rate(r["images_per_sec"]),
          f"{r['speedup_over_sequential']:.2f}x"
          + ("" if r["differs_from_sequential"] or r["members"] == 1
             else " (no difference)")] for r in record["members"]
         if "speedup_over_sequential" in r])
  if "memory" in record:
    lines += ["Device memory while training one window (mnist_jax's own loop): "
              "the device's peak bytes in use (`memory_stats()`), and XLA's "
              "compile-time sizes of the training call's arguments and "
              "temporaries (`memory_analysis()`), MiB.", ""]
    lines += _table(
        ["model", "batch", "dtype", "steps/call", "peak in use", "arguments",
         "temporaries"],
        [[r["model"], str(r["batch_size"]), r["dtype"], str(r["steps_per_call"]),
          _mib(r["peak_bytes_in_use"]),
          _mib((r["compiled_train_bytes"] or {}).get("argument_size_in_bytes")),
          _mib((r["compiled_train_bytes"] or {}).get("temp_size_in_bytes"))]
         for r in record["memory"]])
  skipped = {s: v for s, v in record.get("skipped", {}).items() if s in sections}
  for section, left_out in skipped.items():
    lines += [f"Left out of {section} by its {record['budgets'][section]:.0f} s "
              f"budget: {', '.join(left_out)}.", ""]
  return lines


def _mib(value) -> str:
  """Bytes as MiB; a backend's own words where it gave no number."""
  if value is None:
    return ""
  return f"{value / 2**20:,.1f}" if isinstance(value, (int, float)) else value


def _time_to_accuracy(rows: list[tuple[str, dict, dict]]) -> list[str]:
  """One row per speedrun config: (record name, record, row), newest first found."""
  lines = ["#### Time to target test accuracy", "",
           "Training seconds until the end-of-epoch test accuracy first reaches "
           "the target (compilation and evaluation excluded), mean ± std "
           "(min..max) over the seeds that reached it.", ""]
  table = []
  for name, record, r in rows:
    t, acc = r["seconds_to_target"], r["final_test_accuracy"]
    table.append([
        r["config"], f"{100 * r['target']:.1f}%",
        f"{round(r['fraction_reached'] * r['seeds'])}/{r['seeds']}"
        + (f" (of {r['seeds_requested']} asked)"
           if r.get("seeds_requested", r["seeds"]) != r["seeds"] else ""),
        (f"{t['mean']:.2f} ± {t['std']:.2f} ({t['min']:.2f}..{t['max']:.2f})"
         if t else "not reached"),
        f"{100 * acc['mean']:.2f}% ({100 * acc['min']:.2f}..{100 * acc['max']:.2f})",
        f"{r['num_epochs']} x batch {r['batch_size']} on {r['device_count']} device(s)"
        + (", seeds in one process" if r.get("in_process") else ""),
        f"{r['compile_seconds']:.2f}", f"`{name}`"])
  lines += _table(["config", "target", "seeds reached", "seconds to target",
                   "final accuracy", "epochs", "compile s", "record"], table)
  return lines


def _pytorch(name: str, record: dict) -> list[str]:
  lines = [f"#### PyTorch side by side: {record['model']}, batch "
           f"{record['batch_size']}, {record['epochs']} epoch(s), "
           f"{record['threads']} thread(s), torch {record['torch']['version']}", "",
           _machine_line(name, record), ""]
  rows = []
  for framework, r in record["results"].items():
    s = r["train_seconds"]
    rows.append([framework, f"{s['median']:.2f} ({s['min']:.2f}..{s['max']:.2f})",
                 f"{r['images_per_sec']['median']:,.0f}",
                 f"{100 * r['test_accuracy_mean']:.2f}%"])
  lines += _table(["framework", "training seconds", "images/s", "test accuracy"], rows)
  verdict = ("" if record["repeats"] > 1 and record["differs"] else
             " (one run each)" if record["repeats"] == 1 else " (no measurable difference)")
  lines += [f"JAX seconds / PyTorch seconds: {record['jax_over_torch_seconds']:.2f}"
            f"{verdict}; medians of {record['repeats']} alternating runs.", ""]
  return lines


def _strategies_table(results: dict) -> list[str]:
  """Strategy results (strategies.measure) as a table, with the verdict."""
  def versus(r):
    if "ratio_to_host_loop" not in r:
      return ""
    same = "" if r["differs_from_host_loop"] else " (no difference)"
    return f"{r['ratio_to_host_loop']:.2f}x{same}"
  return _table(
      ["strategy", "steps/call", "images/s", "vs host loop", "compile s"],
      [[k, str(r["steps_per_call"]), _rate(r["images_per_sec"]), versus(r),
        f"{r['compile_seconds']:.2f}"] for k, r in results.items()])


def _strategies(name: str, record: dict) -> list[str]:
  return ([f"#### Strategies, {record['model']} batch {record['batch_size']}, "
           f"{record['machine']['device_count']} device(s) ({name})", ""]
          + _strategies_table(record["results"]))


def _startup(name: str, record: dict) -> list[str]:
  lines = [f"#### Start-up, {record['config']} ({name})", ""]
  lines += _table(["cache", "compile s", "seconds to first step"],
                  [[k, f"{m['compile_seconds']:.2f}", f"{m['seconds_to_first_step']:.2f}"]
                   for k, m in record["medians"].items()])
  return lines


def _cpu_variants(name: str, record: dict) -> list[str]:
  m = record["machine"]
  lines = [f"#### Speedrun step on XLA:CPU, batch {record['batch_size']} over "
           f"{m['device_count']} device(s) ({name})", ""]
  if "ops" in record:
    lines += _table(["piece", "ms (min..max)"],
                    [[k, f"{r['median_ms']:.2f} ({r['min_ms']:.2f}..{r['max_ms']:.2f})"]
                     for k, r in record["ops"].items()])
  if "variants" in record:
    lines += _table(
        ["train step written as", "ms (min..max)", "images/s", "max rel. grad diff"],
        [[k, f"{r['median_ms']:.2f} ({r['min_ms']:.2f}..{r['max_ms']:.2f})",
          f"{r['images_per_sec']:,.0f}", f"{r['max_relative_grad_difference']:.0e}"]
         for k, r in record["variants"].items()])
  return lines


def _is_flag_run(record: dict) -> bool:
  """A cpu_variants run of XLA's own step only, to compare XLA:CPU flags."""
  return (record["benchmark"] == "cpu_variants" and "ops" not in record
          and set(record.get("variants", {})) == {"xla_conv"})


def _xla_flags(runs: list[tuple[str, dict]]) -> list[str]:
  lines = ["#### XLA:CPU flags, speedrun train step (cpu_variants.py --variants=xla_conv)", ""]
  rows = []
  for name, record in sorted(runs, key=lambda item: (item[1]["machine"]["device_count"],
                                                    item[0])):
    flags = record["machine"]["xla_flags"].split()
    extra = " ".join(f for f in flags if "device_count" not in f) or "(none)"
    r = record["variants"]["xla_conv"]
    rows.append([f"{record['batch_size']} over {record['machine']['device_count']}",
                 f"`{extra}`", f"{r['median_ms']:.2f} ({r['min_ms']:.2f}..{r['max_ms']:.2f})",
                 f"`{name}`"])
  lines += _table(["batch over devices", "extra XLA_FLAGS", "ms a step (min..max)",
                   "record"], rows)
  return lines


def _recipe(name: str, record: dict) -> list[str]:
  """benchmarks/pytorch_cpu.py: the PyTorch recipe against the speedrun config."""
  target = 100 * record["target"]
  lines = [f"#### Time to {target:g}%: PyTorch's published recipe against "
           f"configs/mnist_speedrun.py, seeds 0-{record['seeds'] - 1}, "
           f"{record['threads']} thread(s), torch {record['torch']['version']}", "",
           _machine_line(name, record), ""]
  rows = []
  for framework, label in (("torch", "PyTorch recipe"), ("jax", "mnist_jax")):
    r = record["results"][framework]
    s, a = r["train_seconds"], r["test_accuracy"]
    reached = r["time_to_target"]
    rows.append([label, f"{s['median']:.2f} ({s['min']:.2f}..{s['max']:.2f})",
                 f"{r['images_per_sec']['median']:,.0f}",
                 f"{100 * a['mean']:.2f}% ± {100 * a['std']:.2f} "
                 f"({100 * a['min']:.2f}..{100 * a['max']:.2f})",
                 f"{r['below_target']} of {len(r['runs'])}",
                 f"{reached['mean']:.2f}" if reached else "never"])
  lines += _table(["", "training seconds", "images/s", "test accuracy",
                   f"below {target:g}%", f"mean s to {target:g}%"], rows)
  verdict = "" if record["differs"] else " (the ranges overlap: no measurable difference)"
  lines += [f"mnist_jax seconds / PyTorch seconds: "
            f"{record['jax_over_torch_seconds']:.2f}{verdict}; medians of runs "
            f"alternating seed by seed.", ""]
  m = record.get("members")
  if m:
    a = m["test_accuracy"]
    lines += [f"{m['members']} seeds in one mnist_jax run (num_seeds={m['members']}, "
              f"member_loop {m['member_loop']}): {m['train_seconds']:.2f} s against "
              f"{m['torch_sequential_train_seconds']:.2f} s for {m['members']} "
              f"sequential PyTorch runs ({m['jax_over_torch_seconds']:.2f}); test "
              f"accuracy {100 * a['mean']:.2f}% mean ({100 * a['min']:.2f}.."
              f"{100 * a['max']:.2f}), {m['below_target']} below {target:g}%.", ""]
  return lines


RENDERERS = {"strategies": _strategies, "startup": _startup,
             "pytorch_vs_jax": _pytorch, "cpu_variants": _cpu_variants,
             "pytorch_recipe_vs_speedrun": _recipe}


def render(found: dict[str, list[tuple[str, dict]]]) -> str:
  lines = []
  for folder, records in sorted(found.items()):
    lines += [f"### {folder}", ""]
    # Each section from the newest record that has it (a run may measure
    # only some sections).
    newest = {}
    for name, record in records:
      if record["benchmark"] == "harness":
        for section in HARNESS_SECTIONS:
          if section in record:
            newest[section] = name
    by_record = {}
    for section in HARNESS_SECTIONS:
      if section in newest:
        by_record.setdefault(newest[section], []).append(section)
    records_by_name = dict(records)
    for name, sections in by_record.items():
      lines += _harness(name, records_by_name[name], sections)
    speedruns = {}
    for name, record in records:
      for row in record.get("time_to_accuracy", []):
        speedruns[row["config"]] = (name, record, row)
    if speedruns:
      lines += _time_to_accuracy([speedruns[k] for k in sorted(speedruns)])
    flag_runs = [(n, r) for n, r in records if _is_flag_run(r)]
    for name, record in records:
      if record["benchmark"] in RENDERERS and not _is_flag_run(record):
        lines += RENDERERS[record["benchmark"]](name, record)
    if flag_runs:
      lines += _xla_flags(flag_runs)
  return "\n".join(lines).rstrip() + "\n"


def write_readme(readme: Path = README, results_dir: Path = RESULTS):
  text = readme.read_text()
  if BEGIN not in text or END not in text:
    ba.fail(f"{readme} lacks the {BEGIN} / {END} lines")
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  readme.write_text(f"{head}{BEGIN}\n{render(load_records(results_dir))}{END}{tail}")
  print(f"wrote {readme}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--readme", default=str(README), type=ba.existing_file,
                      help="the file whose tables are rewritten")
  parser.add_argument("--results_dir", default=str(RESULTS), type=ba.existing_dir,
                      help="the records, in <backend>-<device kind>/ folders")
  args = parser.parse_args(argv)
  write_readme(Path(args.readme), Path(args.results_dir))


if __name__ == "__main__":
  main()
