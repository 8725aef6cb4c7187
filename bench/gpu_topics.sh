# The GPU run behind the topic-modeling figures (docs/gpu.md). $1: output folder; $2: seeds (YAML list).
# 20NG: contrastive encoder tune, then the BERTopic (pretrained, tuned) vs LDA sweep and the run's model;
# Reuters-21578: its BERTopic model with topics over time (pretrained encoder, no sweep).
# Run it in the foreground of a device call (the tool ends a call's processes when the call returns);
# on 1x H200 the 20NG part took 9 min 22 s with this code (tune 3:11, topic job 6:11 with embeddings;
# docs/topics-gpu/rerun), too close to one 10-minute call: there, run the finetune and the topics
# lines in two back-to-back calls (the second reuses /tmp/runs).
source bench/device_setup.sh
out=${1:?usage: gpu_topics.sh OUT_DIR [SEEDS]}; seeds=${2:-[0,1,2]}
runs=/tmp/runs
mkdir -p "$out"
( time python3 jobs/finetune.py --config configs/topics-gpu.yaml run.output_dir=$runs run.resume=false ) > "$out/finetune.log" 2>&1
grep -E "raytron|Error|real" "$out/finetune.log" | tail -12
( time python3 jobs/topics.py --config configs/topics-gpu.yaml run.output_dir=$runs "topics.seeds=$seeds" ) > "$out/topics.log" 2>&1
grep -E "raytron|Error|real|\|" "$out/topics.log" | tail -40
( time python3 jobs/topics.py --config configs/topics-gpu.yaml run.output_dir=$runs run.name=reuters-gpu \
    data.dataset=reuters21578 "topics.topic_counts=[]" ) > "$out/reuters.log" 2>&1
grep -E "raytron|Error|real" "$out/reuters.log" | tail -8
for run in topics-gpu reuters-gpu; do
  mkdir -p "$out/$run"; cp -r $runs/$run/topics/* $runs/$run/topic_model/raytron.json "$out/$run/" 2>/dev/null
done
cp $runs/topics-gpu/metrics.jsonl $runs/topics-gpu/topics-sweep.jsonl "$out/topics-gpu/" 2>/dev/null
