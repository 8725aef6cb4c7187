# Source on the GPU machine after the staged parts arrived (docs/gpu.md): the Ray + Megatron-Core
# site (site*.tar.xz, unpacked by `stage`), model wheels (*.whl) installed into it, the corpora
# (data.tar.xz of data-root folders, or imdb_50k.jsonl.xz). Python 3.12 there, torch 2.11 (CUDA 13).
set -e
S=/tmp/stage/files
SITE=$(ls -d $S/site*/ | head -1)
for wheel in $S/*.whl; do
  [ -e "$wheel" ] && python3 -m pip install -q --no-deps --no-compile --target "$SITE" "$wheel" 2>&1 | grep -v -i warn || true
done
DATA=$S/data
mkdir -p $DATA/imdb
if [ -f $S/imdb_50k.jsonl.xz ] && [ ! -f $DATA/imdb/imdb_50k.jsonl.gz ]; then
  xz -dc $S/imdb_50k.jsonl.xz | gzip -1 > $DATA/imdb/imdb_50k.jsonl.gz
fi
# The staged site's grpcio (1.84) is older than its grpc_reflection's generated code checks for, and `ray.serve`
# imports it (bench/serve_load.py failed there on 2026-11-30): the check is turned off in this device copy only.
reflection=$SITE/grpc_reflection/v1alpha/reflection_pb2_grpc.py
[ -f "$reflection" ] && sed -i 's/^    raise RuntimeError(/    _version_note = (/' "$reflection"
export PYTHONPATH=$PWD/platform:$SITE RAYTRON_DATA_DIR=$DATA WANDB_MODE=offline PYTHONUNBUFFERED=1
export PATH=$SITE/bin:$PATH
# NVLink multicast stays off on the multi-GPU kinds (/work/.library/device/KINDS.md); Ray's workers inherit these
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
set +e
