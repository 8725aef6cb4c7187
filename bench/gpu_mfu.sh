# The GPU run behind the fast-path figures (docs/gpu-fast-path.md). $1: output folder.
# bench/mfu.py per model, local vs SDPA attention (with the profiler's top kernels), decoder batch sizes,
# Ray Train's overhead on the step, then the IMDb recipe on the fast path (fine-tune + test evaluation).
# Run in the foreground of device calls; on 1x H200 the benchmarks take ~4 min, the IMDb recipe ~6 min:
# `bash bench/gpu_mfu.sh OUT bench` and `bash bench/gpu_mfu.sh OUT imdb` in two back-to-back calls.
source bench/device_setup.sh
out=${1:?usage: gpu_mfu.sh OUT_DIR bench|imdb}; part=${2:-bench}
mkdir -p "$out"
if [ "$part" = bench ]; then
  python3 bench/mfu.py --model encoder --batch 32 --seq 512 --attention local sdpa --profile 2>&1 | grep -v -i warn | tee "$out/mfu-encoder.txt"
  python3 bench/mfu.py --model decoder --batch 16 --seq 1024 --attention local sdpa --profile 2>&1 | grep -v -i warn | tee "$out/mfu-decoder.txt"
  for batch in 32 64; do
    python3 bench/mfu.py --model decoder --batch $batch --seq 1024 --attention sdpa 2>&1 | grep -v -i warn | tail -1 | tee -a "$out/mfu-decoder-batch.txt"
  done
  python3 bench/train_step.py --model encoder --batch 32 --seq 512 2>&1 | grep -v -i warn | tail -5 | tee "$out/ray-overhead.txt"
else
  runs=/tmp/runs
  ( time python3 jobs/finetune.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.resume=false ) > "$out/imdb-finetune.log" 2>&1
  grep -E "raytron|Error|real" "$out/imdb-finetune.log" | tail -14
  ( time python3 jobs/evaluate.py --config configs/sentiment-gpu.yaml run.output_dir=$runs ) > "$out/imdb-evaluate.log" 2>&1
  grep -E "raytron|Error|real" "$out/imdb-evaluate.log" | tail -4
  cp $runs/sentiment-gpu/eval/metrics.json "$out/imdb-metrics.json" 2>/dev/null
  cp $runs/sentiment-gpu/metrics.jsonl "$out/imdb-train-metrics.jsonl" 2>/dev/null
fi
