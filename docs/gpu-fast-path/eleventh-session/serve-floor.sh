# device (session 11): Serve on the GPU (serve/raytron-gpu.yaml as committed) with Serve's floor rows; then a py-spy
# profile of the IMDb encoder's training step (host-bound ~30 ms) in bench/mfu.py
source bench/device_setup.sh
out=$OUT/serve; mkdir -p $out
quiet() { tr "\r" "\n" | grep -v -i -E "warn|GGUF|Loading weights|Writing model shards|^\s*$"; }
runs=/tmp/runs; start=$SECONDS
( time timeout 170 python3 jobs/finetune.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.resume=false \
    train.max_steps=20 data.train_rows=2000 data.val_rows=500 data.test_rows=100 ) > $out/imdb-quick.log 2>&1 &
( time timeout 170 python3 jobs/topics.py --config configs/topics.yaml run.output_dir=$runs run.name=topics-serve \
    "topics.topic_counts=[]" data.rows=200 ) > $out/topics.log 2>&1 &
wait
tail -3 $out/imdb-quick.log; tail -3 $out/topics.log
common="--config serve/raytron-gpu.yaml --sentiment-model $runs/sentiment-gpu/model --topic-model $runs/topics-serve/topic_model --max-batch 128 --concurrency 128 --requests 600"
echo "== serve at $((SECONDS - start)) s"
timeout $((590 - (SECONDS - start) - 100)) python3 bench/serve_load.py $common 2>&1 | quiet > $out/serve-gpu-full.txt
grep -v -E "^\(|INFO|raytron\." $out/serve-gpu-full.txt | tail -20 | tee $out/serve-gpu.txt
grep -i -E "graphs captured|error|Traceback" $out/serve-gpu-full.txt | head -10
echo "== encoder step profile at $((SECONDS - start)) s"
python3 -m pip install -q --target /tmp/pyspy .dev/wheels/py_spy*.whl >/dev/null 2>&1
left=$((590 - (SECONDS - start)))
[ $left -gt 45 ] && timeout $((left - 5)) /tmp/pyspy/bin/py-spy record --rate 250 --format raw --nonblocking \
  --output $out/encoder-step-pyspy.txt -- python3 bench/mfu.py --model encoder --attention sdpa --steps 400 --warmup 20 \
  > $out/encoder-step.txt 2>&1
tail -4 $out/encoder-step.txt
echo "== done at $((SECONDS - start)) s"
