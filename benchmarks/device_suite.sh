#!/usr/bin/env bash
# Every figure of the GPU rows of benchmarks/README.md, on one GPU, in under
# 8 minutes: one run of benchmarks/run.py, its sections in order of worth,
# each bounded in time (--budgets), the whole stopped at DEVICE_SUITE_LIMIT
# seconds (default 420) whatever happens. The record is rewritten after each
# section, so a stop keeps the finished ones.
#
#   throughput        every model, float32 and bfloat16, batch 128, 512,
#                     2048 and 4096, one epoch per timed window
#   time_to_accuracy  configs/mnist_speedrun.py as shipped, seeds 0-9, each
#                     trained in this process (compilation outside the clock)
#   members           the speedrun model, num_seeds=32 (vmapped) against one
#                     (--tiny: the MLP, 4 members)
#   strategies        the speedrun model: the whole-epoch scan against one
#                     step per call (and a host-fed loop, and 8-step chunks)
#   memory            peak device memory of every model at each batch size
#
# Usage, from the repo root:
#   bash benchmarks/device_suite.sh          # on the GPU machine
#   bash benchmarks/device_suite.sh --tiny   # every section on CPU in seconds
#                                            # (also DEVICE_SUITE_TINY=1)
# Environment:
#   PYTHON                 interpreter (default .venv/bin/python, else python3)
#   DEVICE_SUITE_RESULTS   where records go, in <backend>-<device kind>/
#                          (default benchmarks/results; --tiny: a new temp folder)
#   DEVICE_SUITE_DATA_DIR  the folder holding mnist/ (default
#                          benchmarks/carry/datasets, else ../shared/datasets)
#   DEVICE_SUITE_COMMIT    the commit measured, for a checkout without .git
#   DEVICE_SUITE_LIMIT     seconds before the run is stopped (default 420)
#   OUT                    if set (the device tool's output folder), the
#                          records written are copied there at the end
#
# Missing Python packages (the GPU image lacks ml_collections) are installed
# from the wheels in benchmarks/carry/wheels into a folder of their own put on
# PYTHONPATH: jax and the image's other packages are never touched. Fill it
# where PyPI is reachable (README: "GPU rows").
set -euo pipefail
cd "$(dirname "$0")/.."

tiny=${DEVICE_SUITE_TINY:-0}
for arg in "$@"; do
  case "$arg" in
    --tiny) tiny=1 ;;
    *) echo "error: unknown argument $arg; the only one is --tiny" >&2; exit 2 ;;
  esac
done
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1
started=$(date +%s)
say() { echo "[device_suite $(( $(date +%s) - started )) s] $*"; }

# Dependencies: import what mnist_jax imports; install only what is missing.
needed="import ml_collections, absl, yaml, matplotlib, PIL, flax, optax, orbax.checkpoint"
if ! "$PYTHON" -c "$needed" 2>/dev/null; then
  wheels=()
  for wheel in benchmarks/carry/wheels/*.whl; do
    case "$(basename "$wheel")" in
      jax-*|jaxlib-*|jax_*) say "not installing $wheel: the machine's jax stays" ;;
      *.whl) [[ -f "$wheel" ]] && wheels+=("$wheel") ;;
    esac
  done
  if (( ${#wheels[@]} )); then
    site=${TMPDIR:-/tmp}/mnist_jax_site
    say "installing ${#wheels[@]} wheel(s) into $site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$site" "${wheels[@]}"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if ! "$PYTHON" -c "$needed"; then
    echo "error: mnist_jax's dependencies are missing (above); put their wheels in" \
         "benchmarks/carry/wheels (benchmarks/README.md, GPU rows, says how)" >&2
    exit 1
  fi
fi
"$PYTHON" -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"

common=(--no_tables)
if [[ -n "${DEVICE_SUITE_COMMIT:-}" ]]; then common+=("--git_commit=$DEVICE_SUITE_COMMIT"); fi
if (( tiny )); then
  results=${DEVICE_SUITE_RESULTS:-$(mktemp -d)}
  limit=${DEVICE_SUITE_LIMIT:-900}
  batch=16
  model=mlp
  members=4
  # One virtual CPU device, the packaged 160-image slice and the MLP (the
  # cheapest to compile): every section's code path as on a GPU, in seconds.
  # The budgets are there to be exercised, not to bind.
  sizes=(--devices=1 --dataset=mnist160 --models=mlp --batch_sizes=16 --window_images=64
         --repeats=2 --seeds=2 --override=dataset=mnist160 --override=model=mlp
         --override=batch_size=16 --override=steps_per_epoch=0 --override=num_epochs=1
         --strategies_batch_size=8 --strategies_window_images=64
         --memory_models=mlp --memory_batch_sizes=16,32
         --budgets=throughput=600,time_to_accuracy=600,members=600,memory=600)
else
  results=${DEVICE_SUITE_RESULTS:-benchmarks/results}
  limit=${DEVICE_SUITE_LIMIT:-420}
  data_dir=${DEVICE_SUITE_DATA_DIR:-}
  for candidate in benchmarks/carry/datasets ../shared/datasets; do
    if [[ -z "$data_dir" && -d "$candidate/mnist" ]]; then data_dir=$candidate; fi
  done
  if [[ -z "$data_dir" ]]; then
    echo "error: no mnist/ in benchmarks/carry/datasets or ../shared/datasets;" \
         "copy it there or set DEVICE_SUITE_DATA_DIR" >&2
    exit 1
  fi
  model=speedrun
  members=32
  batch=$("$PYTHON" -c "from configs import mnist_speedrun; print(mnist_speedrun.get_config().batch_size)")
  sizes=(--data_dir="$data_dir" --dataset=mnist --models=speedrun,cnn,mlp,bn_cnn,resnet
         --batch_sizes=128,512,2048,4096 --repeats=3 --seeds=10
         --strategies_batch_size="$batch" --strategies_window_images=60000
         --memory_models=speedrun,cnn,mlp,bn_cnn,resnet
         --memory_batch_sizes=128,512,2048,4096
         --budgets=throughput=140,time_to_accuracy=80,members=40,memory=60)
fi
say "records go to $results; stopped after $limit s at the latest"

marker=$(mktemp)
copy_out() {
  if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
    find "$results" -name '*.json' -newer "$marker" | while read -r record; do
      folder="$OUT/$(basename "$(dirname "$record")")"
      mkdir -p "$folder" && cp "$record" "$folder/" && say "copied $record to $folder"
    done
  fi
  rm -f "$marker"
}
trap copy_out EXIT

status=0
timeout -k 10 "$limit" "$PYTHON" benchmarks/run.py "${common[@]}" "${sizes[@]}" \
  --results_dir="$results" --dtypes=float32,bfloat16 \
  --sections=throughput,time_to_accuracy,members,strategies,memory \
  --speedruns=mnist_speedrun --speedruns_in_process \
  --members_models="$model" --members_counts=1,"$members" --member_loops=vmap \
  --members_batch_size="$batch" --strategies_model="$model" || status=$?
if (( status == 124 || status == 137 )); then
  say "stopped at the $limit s limit: the record keeps the sections it finished"
elif (( status )); then
  say "benchmarks/run.py failed (exit $status)"
fi
say "done; records in $results"
if (( ! tiny )); then
  say "next, where the repo is: put the record in benchmarks/results/<backend>-<device kind>/," \
      "run python benchmarks/tables.py and commit both"
fi
exit "$status"
