#!/bin/sh
# Runs inside the minimal qemu guest (bench/cuse/run puts it there). Each
# rep starts the devices afresh — fusegate's Go loopback device (and, with a
# baseline, the same device built from an earlier commit) and the libfuse C
# one, single- (-s) and multi-threaded — and the same client measures them
# interleaved: each benchmark's work is cut into FUSEGATE_BENCH_ROUNDS
# slices, and every device runs one slice in turn, so that a change in the
# host's load hits all of them alike. Fresh processes per rep, because one
# process's speed depends on where its memory happens to land (under the
# emulator the same build's device ran at 50-120 MB/s on 128 KiB
# depending on the process). Output lines:
#   result IMPL MODE PARAM VALUE UNIT
#   cpu IMPL utime U stime S ticks/s HZ threads T ctxsw V/I   (summed over reps)
# With FUSEGATE_BENCH_PROFILE=1 the Go device is bench/cuse/godev writing a
# CPU profile, printed base64-encoded between "profile begin" and
# "profile end" lines at the end, one per rep.
P=/payload
reps=${FUSEGATE_BENCH_REPS:-5}
scale=${FUSEGATE_BENCH_SCALE:-1}
rounds=${FUSEGATE_BENCH_ROUNDS:-20}
only=${FUSEGATE_BENCH_ONLY:-.}
profile=${FUSEGATE_BENCH_PROFILE:-0}
cap=1048576

# wait_node NAME [gone]: wait until /dev/NAME exists (or is gone).
wait_node() {
	i=0
	while if [ "$2" = gone ]; then [ -e "/dev/$1" ]; else [ ! -c "/dev/$1" ]; fi; do
		i=$((i + 1))
		if [ $i -gt 1000 ]; then
			echo "bench: /dev/$1 did not ${2:-appear}" >&2
			exit 1
		fi
		sleep 0.01
	done
}

impls="go"
[ -x $P/fusegate-base ] && impls="$impls go-base"
impls="$impls c-st c-mt"

# start IMPL REP: start the device IMPL in the background.
start() {
	case $1 in
	go)
		if [ "$profile" = 1 ]; then
			$P/godev --name bench-go --capacity $cap --cpuprofile /tmp/go.$2.pprof &
		else
			$P/fusegate device --name bench-go --kind loopback --capacity $cap --log-level warn &
		fi ;;
	go-base) $P/fusegate-base device --name bench-go-base --kind loopback --capacity $cap --log-level warn & ;;
	c-st) $P/cuse-loop-c --name=bench-c-st --capacity=$cap -f -s & ;;
	c-mt) $P/cuse-loop-c --name=bench-c-mt --capacity=$cap -f & ;;
	esac
	eval "pid_$(echo "$1" | tr - _)=$!"
}

# account IMPL: add the device's CPU time (user, system, in clock ticks,
# summed over its threads) and context switches to its totals. Every device
# serves the same requests, so those compare directly.
account() {
	v=$(echo "$1" | tr - _)
	eval pid=\$pid_$v
	set -- $(sed 's/.*) //' /proc/$pid/stat)
	shift 11
	u=$1 s=$2 vcs=0 ivcs=0 threads=0
	for t in /proc/$pid/task/*; do
		threads=$((threads + 1))
		vcs=$((vcs + $(sed -n 's/^voluntary_ctxt_switches:[[:space:]]*//p' $t/status)))
		ivcs=$((ivcs + $(sed -n 's/^nonvoluntary_ctxt_switches:[[:space:]]*//p' $t/status)))
	done
	eval "ut_$v=\$((\${ut_$v:-0} + u)) st_$v=\$((\${st_$v:-0} + s)) th_$v=\$threads"
	eval "vcs_$v=\$((\${vcs_$v:-0} + vcs)) ivcs_$v=\$((\${ivcs_$v:-0} + ivcs))"
}

echo "kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPU, reps $reps, rounds $rounds, scale $scale, devices $impls"
n=$(echo $impls | wc -w)
for rep in $(seq "$reps"); do
	# Each rep starts and measures the devices in another order: the first
	# one measured after the previous benchmark, and (for reasons unknown)
	# the first one started, fare a few percent worse, whatever the code.
	set -- $impls $impls
	shift $(((rep - 1) % n))
	order=$(for i in $(seq $n); do printf '%s ' "$1"; shift; done)
	devs=$(for impl in $order; do printf '/dev/bench-%s,' "$impl"; done)
	for impl in $order; do start $impl $rep; done
	for impl in $impls; do wait_node bench-$impl; done
	while read -r args; do
		echo "$args" | grep -qE -- "$only" || continue
		# shellcheck disable=SC2086
		out=$($P/cuse-bench-client -r "$rounds" "${devs%,}" $args) || { echo "bench: $args: failed" >&2; exit 1; }
		echo "$out" | sed 's|^/dev/bench-|result |'
	done <<-EOT
		rw 4096 $((4 * scale))
		rw 131072 $((32 * scale))
		nbread $((5000 * scale))
		stat $((5000 * scale))
		peek $((5000 * scale)) 4096
	EOT
	pids=
	for impl in $impls; do
		account $impl
		eval "pids=\"\$pids \$pid_$(echo $impl | tr - _)\""
	done
	kill -TERM $pids
	wait
	for impl in $impls; do wait_node bench-$impl gone; done
done
for impl in $impls; do
	v=$(echo "$impl" | tr - _)
	eval "echo \"cpu $impl utime \$ut_$v stime \$st_$v ticks/s $(getconf CLK_TCK 2>/dev/null || echo 100) threads \$th_$v ctxsw \$vcs_$v/\$ivcs_$v\""
done
if [ "$profile" = 1 ]; then
	for f in /tmp/go.*.pprof; do
		[ -s "$f" ] || continue
		echo "profile begin"
		base64 "$f"
		echo "profile end"
	done
fi
