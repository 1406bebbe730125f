#!/bin/bash
# $1 config, $2 out tsv, $3 samples
cd /work/main
./target/release/gridwatch serve-rtsp --port 36771 sample-streams/vtest.mp4 sample-streams/bikes.mp4 > /dev/null 2>&1 &
R=$!
sleep 3
env $ENVX ./target/release/gridwatch run --config $1 > $2.log 2>&1 &
N=$!
for i in $(seq 1 $3); do sleep 20; echo "$((i*20)) $(awk '/RssAnon/{print $2}' /proc/$N/status) $(awk '/RssFile/{print $2}' /proc/$N/status) $(ls /proc/$N/task | wc -l) $(grep -c 'case stored' $2.log)"; done > $2
kill $N; sleep 5; kill $R
echo done >> $2
