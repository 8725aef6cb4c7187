# The GPU runs behind the fast-path figures (docs/gpu-fast-path.md). $1: output folder; $2: the part to run.
#   bench   bench/mfu.py: encoder 32 x 512 and 32 x 256 (a typical bucketed width), decoder 16/32/64 x 1,024,
#           each eager vs torch.compile (profiles at encoder 512, decoder 16 and 64); over 9 min on 1x H200
#           (2026-11-29: the decoder rows took ~7 min): give it a call of its own, after the staging calls
#   imdb    the IMDb recipe (configs/sentiment-gpu.yaml: length-bucketed) fine-tune + 25k test evaluation,
#           extra overrides in $EXTRA (e.g. EXTRA="train.cuda_graphs=false train.compile=true"); ~3 min
#   resume  issue 12 on GPU bf16, train.deterministic=true: a 40-step IMDb run with a checkpoint every 10 steps,
#           twice uninterrupted (run-to-run) and once with its training worker SIGKILLed after step 25 (Ray
#           Train restarts it from step 20); per-step losses compared; ~6 min (measured when every log window was a Ray Train
#           report, ~2 s a step; the kill lands a step or two after 25, before the step-30 checkpoint)
#   loop    issue 16's decoder goals in one call: the summarization recipe's fine-tune in the real Ray Train loop at
#           batch 128, compiled with static shapes (since the fourteenth session), 10 epochs (40 steps) in 10-step log windows (MFU, real-token share of the positions:
#           train/mfu and train/real_token_fraction in metrics.jsonl); then bench/train_step.py, the same compiled
#           64 x 1,024 step bare and in a Ray Train worker (Ray's overhead); ~9 min
#   serve   bench/serve_load.py on serve/raytron-gpu.yaml (classifier batch 128 vs 1, 128 in flight, 1,000 requests), with the
#           imdb part's model (same warm machine: run it first) and a 1,000-post 20NG topic model (configs/topics.yaml)
# Run each in the foreground of a device call, after the staged parts arrived (docs/gpu.md).
source bench/device_setup.sh
out=${1:?usage: gpu_mfu.sh OUT_DIR bench|loop|serve|imdb|resume}; part=${2:-bench}
mkdir -p "$out"
quiet() { tr "\r" "\n" | grep -v -i -E "warn|GGUF|Loading weights|Writing model shards|^\s*$"; }
if [ "$part" = bench ]; then
  python3 bench/mfu.py --model encoder --batch 32 --seq 512 --attention sdpa --compile off on --profile 2>&1 | quiet | tee "$out/mfu-encoder.txt"
  python3 bench/mfu.py --model encoder --batch 32 --seq 256 --attention sdpa --compile off on 2>&1 | quiet | tee -a "$out/mfu-encoder.txt"
  python3 bench/mfu.py --model decoder --batch 16 --seq 1024 --attention sdpa --compile off on --profile 2>&1 | quiet | tee "$out/mfu-decoder-16.txt"
  python3 bench/mfu.py --model decoder --batch 32 --seq 1024 --attention sdpa --compile off on 2>&1 | quiet | tee "$out/mfu-decoder-32.txt"
  python3 bench/mfu.py --model decoder --batch 64 --seq 1024 --attention sdpa --compile off on --profile 2>&1 | quiet | tee "$out/mfu-decoder-64.txt"
elif [ "$part" = loop ]; then
  runs=/tmp/runs
  ( time python3 jobs/finetune.py --config configs/summarization-gpu.yaml run.output_dir=$runs run.name=mfu-loop \
      run.resume=false train.micro_batch_size=128 train.global_batch_size=128 train.compile=true \
      train.compile_static_shapes=true train.epochs=10 train.log_every=10 $EXTRA ) > "$out/loop-finetune.log" 2>&1
  grep -E "raytron.train: epoch|Error|real" "$out/loop-finetune.log" | tail -30
  cp $runs/mfu-loop/metrics.jsonl "$out/loop-metrics.jsonl"
  python3 bench/train_step.py --model decoder --batch 64 --seq 1024 --supervised 129 --attention sdpa --compile on \
    --steps 40 --warmup 10 2>&1 | quiet | tee "$out/train-step-decoder-64.txt"
elif [ "$part" = serve ]; then
  runs=/tmp/runs
  [ -d $runs/topics-serve/topic_model ] || python3 jobs/topics.py --config configs/topics.yaml run.output_dir=$runs \
    run.name=topics-serve "topics.topic_counts=[]" > "$out/topics-serve.log" 2>&1
  python3 bench/serve_load.py --config serve/raytron-gpu.yaml --sentiment-model $runs/sentiment-gpu/model \
    --topic-model $runs/topics-serve/topic_model --max-batch 128 --concurrency 128 --requests 1000 2>&1 | quiet \
    | tee "$out/serve-gpu.txt"
elif [ "$part" = imdb ]; then
  runs=/tmp/runs
  ( time python3 jobs/finetune.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.resume=false $EXTRA ) > "$out/imdb-finetune.log" 2>&1
  grep -E "raytron|Error|real" "$out/imdb-finetune.log" | tail -14
  ( time python3 jobs/evaluate.py --config configs/sentiment-gpu.yaml run.output_dir=$runs $EXTRA ) > "$out/imdb-evaluate.log" 2>&1
  grep -E "raytron|Error|real" "$out/imdb-evaluate.log" | tail -4
  cp $runs/sentiment-gpu/eval/metrics.json "$out/imdb-metrics.json"
  cp $runs/sentiment-gpu/metrics.jsonl "$out/imdb-train-metrics.jsonl"
elif [ "$part" = resume ]; then
  runs=/tmp/runs-resume
  common="--config configs/sentiment-gpu.yaml run.output_dir=$runs run.resume=false train.max_steps=40 train.epochs=1
          train.checkpoint_every=10 train.log_every=1 train.deterministic=true data.train_rows=4000 data.val_rows=500
          data.test_rows=100 $EXTRA"
  python3 jobs/finetune.py $common run.name=whole > "$out/resume-whole.log" 2>&1
  python3 jobs/finetune.py $common run.name=again > "$out/resume-again.log" 2>&1
  python3 jobs/finetune.py $common run.name=killed > "$out/resume-killed.log" 2>&1 &
  job=$!
  steps() { cat $runs/killed/metrics.jsonl 2>/dev/null | grep -c train/loss; }
  until [ "$(steps)" -ge 25 ] || ! kill -0 $job 2>/dev/null; do sleep 0.2; done
  worker=$(pgrep -f "^ray::RayTrainWorker" | head -1)  # this job's one training worker
  echo "killing training worker $worker after step $(steps)"; kill -9 "$worker"
  wait $job
  python3 - "$runs" <<'PY' | tee "$out/resume-compare.txt"
import json, sys
losses = {run: {m["step"]: m["train/loss"] for m in map(json.loads, open(f"{sys.argv[1]}/{run}/metrics.jsonl"))
                if "train/loss" in m} for run in ("whole", "again", "killed")}
print("steps logged:", {run: len(steps) for run, steps in losses.items()})
for other in ("again", "killed"):
    for first, last in ((1, 20), (21, 40)):
        diffs = [abs(losses["whole"][s] - losses[other][s]) for s in range(first, last + 1)]
        print(f"whole vs {other}, steps {first}-{last}: max |loss difference| {max(diffs):.2e}, "
              f"mean {sum(diffs) / len(diffs):.2e}, bit-equal steps {diffs.count(0.0)} of {len(diffs)}")
PY
  grep -E "resumed|restart|Error" "$out/resume-killed.log" | tail -5
fi
