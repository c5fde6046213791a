#!/usr/bin/env bash
# Benchmarks fusegate's passthrough mirror side by side with the native
# directory and go-fuse's loopback example, and prints a table of medians
# with ratios to native. Installs what it needs (fio from Debian, go-fuse's
# loopback from the Go module proxy into the work directory; neither is
# committed). Needs root. Not part of the test suite.
#
#   bench/passthrough/run.sh [driver options]   e.g. -rounds 5 -out /tmp/table.md
#
# The data workloads run in BENCH_WORK (default /var/tmp/fusegate-bench) on
# the machine's file system. The metadata workload runs on one fresh ext4
# file system shared by every target: a sparse image of BENCH_IMAGE_SIZE
# (default 4G) made with mkfs.ext4's defaults and loop-mounted for the run
# (on a long-used file system ext4's inode allocator slows down after many
# deletions, which would favour whichever target ran first). All of it is
# removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
	echo "bench/passthrough/run.sh: run as root (it mounts and drops caches)" >&2
	exit 1
fi
base=${BENCH_WORK:-/var/tmp/fusegate-bench}
bin=$base/bin
work=$base/data
meta=$base/meta
mkdir -p "$bin" "$work" "$meta"

if ! command -v fio >/dev/null; then
	apt-get update -qq && apt-get install -y -qq fio >/dev/null
fi
if [ ! -x "$bin/loopback" ]; then
	GOBIN=$bin go install github.com/hanwen/go-fuse/v2/example/loopback@latest
fi
go build -o "$bin/fusegate" ./cmd/fusegate
go build -o "$bin/metabench" ./bench/passthrough/metabench
go build -o "$bin/driver" ./bench/passthrough/driver

truncate -s "${BENCH_IMAGE_SIZE:-4G}" "$base/meta.img"
mkfs.ext4 -q -F "$base/meta.img"
mount -o loop "$base/meta.img" "$meta"
cleanup() {
	umount "$meta" 2>/dev/null || umount -l "$meta" 2>/dev/null || true
	rm -rf "$base"
}
trap cleanup EXIT

echo "# $(uname -r), $(nproc) CPUs, $(fio --version), go-fuse $(go version -m "$bin/loopback" | awk '$2=="github.com/hanwen/go-fuse/v2"{print $3}')," \
	"data on $(df -PT "$work" | awk 'NR==2{print $2" "$1}'), metadata on a fresh ext4 image" >&2
"$bin/driver" -work "$work" -metawork "$meta" -fusegate "$bin/fusegate" -loopback "$bin/loopback" -metabench "$bin/metabench" "$@"
