# The GPU runs behind the tuning figures of issue 14 (docs/tune-gpu.md). $1: output folder; $2: part.
#   sentiment: the IMDb search of configs/sentiment-gpu.yaml (8 trials, 4 sharing the GPU at 0.25 GPU each,
#              Optuna TPE + ASHA on val accuracy, the first trial the hand-set recipe). A device call ends at 10
#              minutes: this part stops itself with Ctrl-C (SIGINT) at 9 min and Tune saves the search; run the same
#              call again until it prints "done: best val/accuracy ..." (Tuner.restore resumes it, finished trials
#              are kept). Trials' checkpoints stay in /tmp/runs while the machine is warm (calls back to back).
#   sentiment-final: fine-tune with the tuned recipe ($1/tuned/sentiment-gpu.yaml, applied by default) and
#              evaluate on the 25k test reviews; the hand-set figures are README's (93.12% / 93.09%).
#   topics:    the 20NG search of configs/topics-gpu.yaml (UMAP/HDBSCAN by NPMI x diversity x coverage on held-out
#              documents, a Tune trial per CPU; stops itself with Ctrl-C at 9 min: when it prints "interrupted", run
#              the same call again, back to back, and the search resumes; 2026-11-29 on 16 cores: the trials took
#              5 min in a resumed call, longer on a fresh machine).
#   topics-final: jobs/topics.py with the tuned recipe ($1/tuned/topics-gpu.yaml; NPMI/diversity over 10-50 x 3
#              seeds on all documents, ~4.5 min), in a call of its own, as run.name=topics-tuned.
#              Needs 20newsgroups/20news_bydate.jsonl.gz under $RAYTRON_DATA_DIR on the device (staged with it).
# Usage, after the staging calls of docs/gpu.md: `bash bench/gpu_tune.sh OUT sentiment` (repeat), then
# `bash bench/gpu_tune.sh OUT sentiment-final`, `bash bench/gpu_tune.sh OUT topics`, `bash bench/gpu_tune.sh OUT topics-final` (each in the foreground).
source bench/device_setup.sh
out=${1:?usage: gpu_tune.sh OUT_DIR sentiment|sentiment-final|topics|topics-final}; part=${2:-sentiment}
runs=/tmp/runs
mkdir -p "$out/tuned"
case "$part" in
  sentiment)
    ( time timeout -s INT 540 python3 jobs/tune.py --config configs/sentiment-gpu.yaml run.output_dir=$runs \
        tune.tuned_dir=$out/tuned ) >> "$out/sentiment-tune.log" 2>&1
    grep -E "raytron.tune|^done|^interrupted|Error|real" "$out/sentiment-tune.log" | tail -30
    cp $runs/sentiment-gpu/tune/sentiment-gpu-tune/trials.json "$out/sentiment-trials.json" 2>/dev/null ;;
  sentiment-final)
    ( time python3 jobs/finetune.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.name=sentiment-tuned \
        tune.tuned_dir=$out/tuned ) > "$out/sentiment-tuned-finetune.log" 2>&1
    grep -E "applying tuned|raytron.train: epoch|Error|real" "$out/sentiment-tuned-finetune.log" | tail -12
    ( time python3 jobs/evaluate.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.name=sentiment-tuned \
        tune.tuned_dir=$out/tuned ) > "$out/sentiment-tuned-evaluate.log" 2>&1
    grep -E "raytron|Error|real" "$out/sentiment-tuned-evaluate.log" | tail -4
    cp $runs/sentiment-tuned/eval/metrics.json "$out/sentiment-tuned-metrics.json" 2>/dev/null ;;
  topics)
    ( time timeout -s INT 540 python3 jobs/tune.py --config configs/topics-gpu.yaml run.output_dir=$runs \
        tune.tuned_dir=$out/tuned ) >> "$out/topics-tune.log" 2>&1
    grep -E "raytron.tune|^done|^interrupted|Error|real" "$out/topics-tune.log" | grep -v started | tail -30
    cp $runs/topics-gpu/tune/topics-gpu-tune/trials.json "$out/topics-trials.json" 2>/dev/null ;;
  topics-final)
    ( time python3 jobs/topics.py --config configs/topics-gpu.yaml run.output_dir=$runs run.name=topics-tuned \
        tune.tuned_dir=$out/tuned ) > "$out/topics-tuned.log" 2>&1
    grep -E "applying tuned|raytron|Error|real|\|" "$out/topics-tuned.log" | tail -30 ;;
esac
