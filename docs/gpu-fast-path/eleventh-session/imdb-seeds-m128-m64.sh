# device (session 11): IMDb, more epochs at a large micro-batch: micro 128 (lr 1.6e-4, 8 epochs) and micro 64
# (lr 1.13e-4, 5 epochs), seeds 1-3 each, six runs at once on the one GPU (host-bound steps; tokens/s of these runs
# are not figures); each exported model (best validation accuracy) then scored on the 25k test split.
source bench/device_setup.sh
export RAYTRON_CACHE=/tmp/seedcache
out=/tmp/seedlogs; mkdir -p $out $OUT/seeds; runs=/tmp/seeds; start=$SECONDS
manifests() { ls $RAYTRON_CACHE/data/imdb/*/_split.json 2>/dev/null | wc -l; }
one() {  # name, wait-for-manifests, overrides...
  name=$1; need=$2; shift 2
  ( time timeout 470 python3 jobs/finetune.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.name=$name \
      run.resume=false train.log_every=50 "$@" ) > $out/$name-finetune.log 2>&1
  until [ "$(manifests)" -ge $need ] || [ $((SECONDS - start)) -gt 480 ]; do sleep 2; done
  ( time timeout 100 python3 jobs/evaluate.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.name=$name \
      "$@" ) > $out/$name-evaluate.log 2>&1
  echo "$name at $((SECONDS - start)) s: $(grep -h -o 'test accuracy.*rows' $out/$name-evaluate.log)"
}
m128="train.micro_batch_size=128 train.global_batch_size=128 train.lr=1.6e-4 train.epochs=8"
m64="train.micro_batch_size=64 train.global_batch_size=64 train.lr=1.13e-4 train.epochs=5"
one m128-s1 2 $m128 train.seed=1 &
until [ "$(manifests)" -ge 2 ] || [ $((SECONDS - start)) -gt 240 ]; do sleep 2; done
echo "cache filled at $((SECONDS - start)) s"
one m128-s2 3 $m128 train.seed=2 &
one m128-s3 3 $m128 train.seed=3 &
one m64-s1 3 $m64 train.seed=1 &
one m64-s2 3 $m64 train.seed=2 &
one m64-s3 3 $m64 train.seed=3 &
wait
echo "done at $((SECONDS - start)) s"
for f in $out/*.log; do echo "== $f"; grep -E "raytron|Error|error|real" $f | grep -v "step .*/.*loss" | cut -c1-220; done > $OUT/seeds/logs.txt
grep -h -E "val(idation)? .*accuracy|epoch .* val" $out/*-finetune.log | cut -c1-200 > $OUT/seeds/val.txt
