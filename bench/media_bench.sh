#!/usr/bin/env bash
# Media benchmark (make bench): thumbnails per second of the media worker's image step side
# by side with Debian's vipsthumbnail on the same images, one core each, ratio printed; and
# upload throughput in MiB/s side by side with nginx and versitygw (bench/media_upload.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BENCH_BIN:-$ROOT/build/rel/bench/media_thumbs}
N=${BENCH_IMAGES:-24}
W=${BENCH_WIDTH:-3000}
H=${BENCH_HEIGHT:-2000}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
export VIPS_CONCURRENCY=1   # one core for both sides

echo "bench: making $N ${W}x${H} JPEG photos (noise, worst case for the encoder) ..."
vips gaussnoise "$DIR/n.v" "$W" "$H"
vips bandjoin "$DIR/n.v $DIR/n.v $DIR/n.v" "$DIR/rgb.v"
vips colourspace "$DIR/rgb.v" "$DIR/base.jpg" srgb
for i in $(seq 1 "$N"); do cp "$DIR/base.jpg" "$DIR/img$i.jpg"; done
files=$(ls "$DIR"/img*.jpg)

ours=$("$BIN" $files)
echo "$ours"
ours_tps=$(echo "$ours" | sed -n 's/.*thumbs_per_s=\([0-9.]*\).*/\1/p')

# The peer does the same work per image: three thumbnails (bounding boxes 128, 512, 1024,
# metadata stripped) and the stripped original re-encoded.
t0=$(date +%s.%N)
mkdir -p "$DIR/out"
# One process per size, so process start-up is not what is measured; the original is a
# "thumbnail" whose box never shrinks it.
for s in 128 512 1024 100000; do
  vipsthumbnail $files --size "${s}x${s}>" -o "$DIR/out/%s_$s.jpg[Q=90,strip]"
done
t1=$(date +%s.%N)
peer_tps=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", 3 * n / (b - a) }')
echo "vipsthumbnail images=$N seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') thumbs_per_s=$peer_tps"
awk -v o="$ours_tps" -v p="$peer_tps" 'BEGIN { printf "thumbnails ratio (media / vipsthumbnail): %.2fx (goal >= 0.9x)\n", o / p }'

# Upload throughput (MiB/s) with its peers (nginx, versitygw), on media instances of its own.
bash "$ROOT/bench/media_upload.sh"
