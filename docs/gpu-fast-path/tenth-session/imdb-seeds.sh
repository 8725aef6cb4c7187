# device (session 10): IMDb seed study, the recipe (micro 32) vs micro 128 (lr 1.6e-4, 4 epochs), seeds 1-3 each,
# six runs at once on the one GPU (host-bound steps; tokens/s of these runs are not figures); each then scored on
# the 25k test split. The first run fills the tokenized-split cache before the others start.
source bench/device_setup.sh
export RAYTRON_CACHE=/tmp/seedcache
out=/tmp/seedlogs; mkdir -p $out $OUT/seeds; runs=/tmp/seeds; start=$SECONDS
manifests() { ls $RAYTRON_CACHE/data/imdb/*/_split.json 2>/dev/null | wc -l; }
one() {  # name, wait-for-manifests, overrides...
  name=$1; need=$2; shift 2
  ( time timeout 540 python3 jobs/finetune.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.name=$name \
      run.resume=false "$@" ) > $out/$name-finetune.log 2>&1
  until [ "$(manifests)" -ge $need ] || [ $((SECONDS - start)) -gt 540 ]; do sleep 2; done
  ( time timeout 120 python3 jobs/evaluate.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.name=$name \
      "$@" ) > $out/$name-evaluate.log 2>&1
  echo "$name at $((SECONDS - start)) s: $(grep -h -o 'validation loss.*' $out/$name-finetune.log | tail -1 | cut -c1-60) | $(grep -h -o 'test accuracy.*rows' $out/$name-evaluate.log)"
}
big="train.micro_batch_size=128 train.global_batch_size=128 train.lr=1.6e-4 train.epochs=4"
one m32-s1 2 train.seed=1 &
until [ "$(manifests)" -ge 2 ] || [ $((SECONDS - start)) -gt 300 ]; do sleep 2; done
echo "cache filled at $((SECONDS - start)) s"
one m32-s2 3 train.seed=2 &
one m32-s3 3 train.seed=3 &
one m128-s1 3 $big train.seed=1 &
one m128-s2 3 $big train.seed=2 &
one m128-s3 3 $big train.seed=3 &
wait
echo "done at $((SECONDS - start)) s"
for f in $out/*.log; do echo "== $f"; grep -E "raytron|Error|error|real" $f | grep -v "step .*/.*loss" | cut -c1-220; done > $OUT/seeds/logs.txt
grep -h "step .*/.*loss" $out/m*-s1-finetune.log | cut -c1-220 > $OUT/seeds/steps-s1.txt
