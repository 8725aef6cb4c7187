# device (session 10): Serve on the GPU with the classifier's CUDA graphs (serve/raytron-gpu.yaml as committed),
# then the same with RAY_SERVE_THROUGHPUT_OPTIMIZED=1; rows print as measured (a cut run keeps its rows)
source bench/device_setup.sh
out=$OUT/serve; mkdir -p $out
quiet() { tr "\r" "\n" | grep -v -i -E "warn|GGUF|Loading weights|Writing model shards|^\s*$"; }
runs=/tmp/runs; start=$SECONDS
( time timeout 170 python3 jobs/finetune.py --config configs/sentiment-gpu.yaml run.output_dir=$runs run.resume=false \
    train.max_steps=20 data.train_rows=2000 data.val_rows=500 data.test_rows=100 ) > $out/imdb-quick.log 2>&1
tail -3 $out/imdb-quick.log
( time timeout 150 python3 jobs/topics.py --config configs/topics.yaml run.output_dir=$runs run.name=topics-serve \
    "topics.topic_counts=[]" data.rows=200 ) > $out/topics.log 2>&1
tail -3 $out/topics.log
common="--config serve/raytron-gpu.yaml --sentiment-model $runs/sentiment-gpu/model --topic-model $runs/topics-serve/topic_model --max-batch 128 --concurrency 128 --requests 600"
echo "== graphs at $((SECONDS - start)) s"
timeout $((560 - (SECONDS - start) - 200 > 180 ? 560 - (SECONDS - start) - 200 : 180)) python3 bench/serve_load.py $common 2>&1 | quiet > $out/serve-gpu-graphs-full.txt
grep -v -E "^\(|INFO|raytron\." $out/serve-gpu-graphs-full.txt | tail -16 | tee $out/serve-gpu-graphs.txt
grep -i -E "graph|error|Traceback" $out/serve-gpu-graphs-full.txt | head -20
echo "== throughput-optimized at $((SECONDS - start)) s"
left=$((575 - (SECONDS - start)))
[ $left -gt 60 ] && RAY_SERVE_THROUGHPUT_OPTIMIZED=1 timeout $left python3 bench/serve_load.py $common 2>&1 | quiet \
  | grep -v -E "^\(|INFO|raytron\." | tail -16 | tee $out/serve-gpu-graphs-throughput-optimized.txt
echo "== done at $((SECONDS - start)) s"
