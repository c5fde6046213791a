#!/bin/sh
# Runs inside the minimal qemu guest (bench/cuse/run puts it there). The
# devices run at once — fusegate's Go loopback device (and, with a baseline,
# the same device built from an earlier commit) and the libfuse C one,
# single- (-s) and multi-threaded — and the same client measures them in
# turn, benchmark by benchmark, FUSEGATE_BENCH_REPS times, so that a change
# in the host's load hits all of them alike. Output lines:
#   result IMPL MODE PARAM VALUE UNIT
# With FUSEGATE_BENCH_PROFILE=1 the Go device is bench/cuse/godev writing a
# CPU profile, printed base64-encoded between "profile begin" and
# "profile end" lines at the end.
P=/payload
reps=${FUSEGATE_BENCH_REPS:-5}
scale=${FUSEGATE_BENCH_SCALE:-1}
profile=${FUSEGATE_BENCH_PROFILE:-0}
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

impls="go"
if [ "$profile" = 1 ]; then
	$P/godev --name bench-go --capacity $cap --cpuprofile /tmp/go.pprof &
else
	$P/fusegate device --name bench-go --kind loopback --capacity $cap --log-level warn &
fi
gopid=$!
pids=$gopid
pid_go=$gopid
if [ -x $P/fusegate-base ]; then
	$P/fusegate-base device --name bench-go-base --kind loopback --capacity $cap --log-level warn &
	pid_go_base=$!
	pids="$pids $!"
	impls="$impls go-base"
fi
$P/cuse-loop-c --name=bench-c-st --capacity=$cap -f -s &
pid_c_st=$!
pids="$pids $!"
$P/cuse-loop-c --name=bench-c-mt --capacity=$cap -f &
pid_c_mt=$!
pids="$pids $!"
impls="$impls c-st c-mt"
for impl in $impls; do wait_node bench-$impl; done

echo "kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPU, reps $reps, scale $scale, devices $impls"
for rep in $(seq "$reps"); do
	while read -r args; do
		for impl in $impls; do
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
# Each device served the same requests: its CPU time (user, system, in
# clock ticks, summed over its threads) and context switches compare directly.
for impl in $impls; do
	eval pid=\$pid_$(echo $impl | tr - _)
	set -- $(cat /proc/$pid/stat | sed 's/.*) //')
	shift 11
	utime=$1 stime=$2
	vcs=0 ivcs=0 threads=0
	for t in /proc/$pid/task/*; do
		threads=$((threads + 1))
		vcs=$((vcs + $(sed -n 's/^voluntary_ctxt_switches:[[:space:]]*//p' $t/status)))
		ivcs=$((ivcs + $(sed -n 's/^nonvoluntary_ctxt_switches:[[:space:]]*//p' $t/status)))
	done
	echo "cpu $impl utime $utime stime $stime ticks/s $(getconf CLK_TCK 2>/dev/null || echo 100) threads $threads ctxsw $vcs/$ivcs"
done
kill -TERM $pids
wait
if [ "$profile" = 1 ] && [ -s /tmp/go.pprof ]; then
	echo "profile begin"
	base64 /tmp/go.pprof
	echo "profile end"
fi
