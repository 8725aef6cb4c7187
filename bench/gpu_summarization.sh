# The GPU run behind the summarization figures (docs/gpu.md): fine-tune SmolLM2 on the 595 training
# rows, then the ROUGE table on the 98 test rows. Outputs small enough to keep are copied to $1.
source bench/device_setup.sh
out=${1:?usage: gpu_summarization.sh OUT_DIR}
runs=/tmp/runs
mkdir -p "$out"
nvidia-smi --query-gpu=name --format=csv,noheader > "$out/gpu.txt"
( time python3 jobs/finetune.py --config configs/summarization-gpu.yaml run.output_dir=$runs run.resume=false ) \
  > "$out/finetune.log" 2>&1
( time python3 jobs/evaluate.py --config configs/summarization-gpu.yaml run.output_dir=$runs ) > "$out/evaluate.log" 2>&1
cp -r $runs/summarization-gpu/eval $runs/summarization-gpu/metrics.jsonl $runs/summarization-gpu/model/raytron.json "$out/" 2>/dev/null
grep -E "raytron|Error|error|real" "$out/finetune.log" | tail -25
grep -E "raytron|Error|error|real|\|" "$out/evaluate.log" | tail -25
