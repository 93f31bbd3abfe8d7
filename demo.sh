#!/usr/bin/env bash
# The whole job on a fresh machine, offline apart from package installs, on real pretrained
# stand-in models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, all-mpnet-base-v2) and real data:
# environment -> data -> three extractions -> main.py -> result table.
#
#   bash demo.sh --data-from ../shared/data     # copy the CSVs from a local folder (no download)
#   bash demo.sh                                # download the published CSVs (sha256-checked)
#   bash demo.sh --full --runs 5                # every row of every split, 5 seeds (about an hour on 2 CPU cores)
#
# Options: --task ED|go_emotion|...  --limit N (rows per split, default 1000)  --full  --runs N
#          --data-from DIR  --python PYTHON
# The recommended recipe on CPU: the extractors' dtype auto (bfloat16 on a CPU with bf16 matrix
# units, faster there, features at cosine >= 0.9997 to float32's; float32 on other CPUs, where
# bfloat16 is tens of times slower), the classifier at batch 64 with lr 2.5e-4 (the accuracy of
# batch 10 at a quarter of the time). Limited runs keep their features in dataset/limitN/ so they
# never overwrite a full extraction in dataset/.
set -euo pipefail
cd "$(dirname "$0")"

task=ED limit=1000 runs=1 data_from="" python=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --task) task=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    --full) limit=""; shift ;;
    --runs) runs=$2; shift 2 ;;
    --data-from) data_from=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see bash demo.sh --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n== %s\n' "$*"; }

step "environment (.venv)"
[ -x .venv/bin/python ] || "$python" -m venv .venv
. .venv/bin/activate
pip install -q -r requirements.txt
pip install -q --no-deps -r requirements-standins.txt
pip install -q --no-deps --no-build-isolation -e .

step "data: $task"
if [ -n "$data_from" ]; then
  python prepare_data.py --from "$data_from" --tasks "$task"
else
  python prepare_data.py --tasks "$task"
fi

if [ -n "$limit" ]; then
  dataset_dir="dataset/limit$limit"
  limit_args=(--limit "$limit")
else
  dataset_dir="dataset"
  limit_args=()
fi

for script in bert_rep_extract.py roberta_rep_extract.py llama2_rep_extract.py; do
  step "features: python $script --task $task --mode all --preset offline ${limit_args[*]} --dataset_dir $dataset_dir"
  python $script --task "$task" --mode all --preset offline "${limit_args[@]}" --dataset_dir "$dataset_dir"
done

step "classifier: python main.py --task $task --runs $runs --batch_size 64 --lr 2.5e-4 --dataset_dir $dataset_dir"
python main.py --task "$task" --runs "$runs" --batch_size 64 --lr 2.5e-4 --dataset_dir "$dataset_dir"

step "all runs so far (Logs/runs.csv)"
if command -v column >/dev/null; then column -s, -t Logs/runs.csv; else cat Logs/runs.csv; fi
