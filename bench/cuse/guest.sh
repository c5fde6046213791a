#!/bin/sh
# Runs inside the minimal qemu guest (bench/cuse/run puts it there). The
# three devices run at once — fusegate's Go loopback device and the libfuse C
# one, single- (-s) and multi-threaded — and the same client measures them
# in turn, benchmark by benchmark, FUSEGATE_BENCH_REPS times, so that a
# change in the host's load hits all three alike. Output lines:
#   result IMPL MODE PARAM VALUE UNIT
P=/payload
reps=${FUSEGATE_BENCH_REPS:-5}
scale=${FUSEGATE_BENCH_SCALE:-1}
cap=1048576

wait_node() {
	i=0
	while [ ! -c "/dev/$1" ]; do
		i=$((i + 1))
		if [ $i -gt 1000 ]; then
			echo "bench: /dev/$1 did not appear" >&2
			exit 1
		fi
		sleep 0.01
	done
}

$P/fusegate device --name bench-go --kind loopback --capacity $cap --log-level warn &
pids=$!
$P/cuse-loop-c --name=bench-c-st --capacity=$cap -f -s &
pids="$pids $!"
$P/cuse-loop-c --name=bench-c-mt --capacity=$cap -f &
pids="$pids $!"
for impl in go c-st c-mt; do wait_node bench-$impl; done

echo "kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPU, reps $reps, scale $scale"
for rep in $(seq "$reps"); do
	while read -r args; do
		for impl in go c-st c-mt; do
			# shellcheck disable=SC2086
			out=$($P/cuse-bench-client /dev/bench-$impl $args) || { echo "bench: $impl $args: failed" >&2; exit 1; }
			echo "result $impl $out"
		done
	done <<-EOT
		rw 4096 $((4 * scale))
		rw 131072 $((32 * scale))
		nbread $((5000 * scale))
		stat $((5000 * scale))
		peek $((5000 * scale)) 4096
	EOT
done
kill -TERM $pids
wait
