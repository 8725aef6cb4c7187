# The 2-GPU runs behind issue 15's figures (docs/gpu-multi.md). $1: output folder; $2: the part to run.
#   encoder  IMDb recipe (configs/sentiment-gpu.yaml) cut to one epoch of 300 steps x 64 reviews (micro 32), the
#            same seed: DP=1 (accumulation 2), DP=2, DP=2 with the distributed optimizer (100 steps, memory), and
#            TP=2 whose whole Ray cluster is SIGKILLed after step 150 and which resumes on ONE GPU with TP=1 from
#            its 2-rank checkpoint of step 100 (dist_checkpointing reshards); ~7 min
#   decoder  summarization recipe (configs/summarization-gpu.yaml), 2 epochs (74 steps of 16 x 1,024, micro 8):
#            DP=1 (accumulation 2), DP=2, and DP=2 with the distributed optimizer for one epoch (memory); ~8 min
# Then: python bench/parallel_runs.py OUT/enc-dp1.metrics.jsonl OUT/enc-dp2.metrics.jsonl ... --gpus 1 2 ... --plot P.
# Each multi-GPU command is what `raytron k8s render finetune` puts in a RayJob's entrypoint for a worker group of
# 2 GPU pods (resources.num_workers=2 resources.use_gpu=true), run on one 2-GPU machine. After the staging calls of
# docs/gpu.md; detach it (setsid nohup) and copy $1 out from back-to-back calls: a call ends at 10 minutes.
# The TP=2 kill is `pkill -9` of the job and `ray stop --force`: it stops every Ray process on the host (a dedicated
# benchmark machine only).
source bench/device_setup.sh
out=${1:?usage: gpu_multi.sh OUT_DIR encoder|decoder}; part=${2:-encoder}
runs=/tmp/runs-multi
mkdir -p "$out"
nvidia-smi topo -m > "$out/topology.txt" 2>&1
finetune() {  # $1: run name; the rest: overrides. Keeps the log and the per-window metrics.
  local name=$1; shift
  echo "$(date +%T) $name: $*"
  ( time python3 jobs/finetune.py $common run.output_dir=$runs run.name=$name "$@" ) > "$out/$name.log" 2>&1
  local rc=$?
  echo "$(date +%T) $name: rc $rc"; grep -E "raytron.train: (epoch|rank)|resum|reshard|Error|^real" "$out/$name.log" | tail -6
  cp $runs/$name/metrics.jsonl "$out/$name.metrics.jsonl" 2>/dev/null
}
if [ "$part" = encoder ]; then
  # train.cuda_graphs=false: the TP=2 runs cannot replay graphs, and every layout here runs the same eager step
  common="--config configs/sentiment-gpu.yaml train.global_batch_size=64 data.train_rows=19200 data.val_rows=2000
          data.test_rows=100 train.epochs=1 train.checkpoint_every=100 train.log_every=10 resources.use_gpu=true
          train.cuda_graphs=false"
  finetune enc-dp1 run.resume=false
  finetune enc-dp2 run.resume=false resources.num_workers=2
  finetune enc-dp2-distopt run.resume=false resources.num_workers=2 train.distributed_optimizer=true train.max_steps=100
  finetune enc-tp2 run.resume=false resources.num_workers=2 parallel.tensor=2 &
  job=$!
  until [ "$(grep -c train/loss $runs/enc-tp2/metrics.jsonl 2>/dev/null)" -ge 15 ] || ! kill -0 $job 2>/dev/null; do
    sleep 0.5
  done
  echo "$(date +%T) enc-tp2: killing its Ray cluster after step 150 (checkpoint of step 100 on disk)"
  pkill -9 -f "jobs/finetune.py.*enc-tp2"; ray stop --force > /dev/null 2>&1; wait
  cp $runs/enc-tp2/metrics.jsonl "$out/enc-tp2-before-kill.metrics.jsonl"
  finetune enc-tp2 resources.num_workers=1 parallel.tensor=1  # resumes the run: 2 ranks' checkpoint, 1 rank
  mv "$out/enc-tp2.log" "$out/enc-tp2-resumed-tp1.log"; mv "$out/enc-tp2.metrics.jsonl" "$out/enc-tp2-resumed-tp1.metrics.jsonl"
elif [ "$part" = decoder ]; then
  common="--config configs/summarization-gpu.yaml train.epochs=2 train.log_every=2 resources.use_gpu=true"
  finetune dec-dp1 run.resume=false
  finetune dec-dp2 run.resume=false resources.num_workers=2
  finetune dec-dp2-distopt run.resume=false resources.num_workers=2 train.distributed_optimizer=true train.epochs=1
fi
echo "$(date +%T) $part: all runs done"
