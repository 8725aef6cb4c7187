# device (session 11, second seed call): micro 64 (lr 1.13e-4, 5 epochs), seeds 1-3, three runs at once (tokens/s of
# these runs are not figures), then the three exported models scored on the 25k test split, three at once
source bench/device_setup.sh
export RAYTRON_CACHE=/tmp/seedcache
out=/tmp/seedlogs; mkdir -p $out $OUT/seeds; runs=/tmp/seeds; start=$SECONDS
manifests() { ls $RAYTRON_CACHE/data/imdb/*/_split.json 2>/dev/null | wc -l; }
m64="train.micro_batch_size=64 train.global_batch_size=64 train.lr=1.13e-4 train.epochs=5"
tune() { ( time timeout 420 python3 jobs/finetune.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.name=$1 \
      run.resume=false $m64 train.seed=$2 ) > $out/$1-finetune.log 2>&1; echo "$1 trained at $((SECONDS - start)) s"; }
score() { ( time timeout 240 python3 jobs/evaluate.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.name=$1 \
      $m64 ) > $out/$1-evaluate.log 2>&1
  echo "$1 at $((SECONDS - start)) s: $(grep -h -o 'test accuracy.*rows' $out/$1-evaluate.log)"; }
tune m64-s1 1 &
until [ "$(manifests)" -ge 2 ] || [ $((SECONDS - start)) -gt 200 ]; do sleep 2; done
echo "cache filled at $((SECONDS - start)) s"
tune m64-s2 2 &
tune m64-s3 3 &
wait
score m64-s1 &
until [ "$(manifests)" -ge 3 ] || [ $((SECONDS - start)) -gt 560 ]; do sleep 2; done
score m64-s2 &
score m64-s3 &
wait
echo "done at $((SECONDS - start)) s"
for f in $out/*.log; do echo "== $f"; grep -E "raytron|Error|error|real" $f | grep -v "step .*/.*loss" | cut -c1-220; done > $OUT/seeds/logs.txt
