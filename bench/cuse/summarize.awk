# Summarises guest.sh's "result IMPL MODE PARAM VALUE UNIT" lines: the median
# of each benchmark per implementation, and ratios (> 1: the first named is
# faster): fusegate to each libfuse variant and, when a baseline build ran
# too (IMPL go-base), fusegate to its baseline.
function median(impl, k,   m, i, j, t, a) {
	m = n[impl, k]
	for (i = 1; i <= m; i++) a[i] = v[impl, k, i]
	for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
function show(x, u) { return u == "MB/s" ? sprintf("%.1f MB/s", x) : sprintf("%.0f µs", x / 1000) }
# ratio of a to b, > 1 when a is better
function ratio(a, b, u) { return u == "MB/s" ? a / b : b / a }
$1 == "result" {
	k = $3 " " $4
	if (!(k in unit)) order[++nk] = k
	v[$2, k, ++n[$2, k]] = $5
	unit[k] = $6
	seen[$2] = 1
}
END {
	name["rw 4096"] = "write+read 4 KiB (MB/s each way)"
	name["rw 131072"] = "write+read 128 KiB (MB/s each way)"
	name["nbread -"] = "empty O_NONBLOCK read, EAGAIN (per call)"
	name["stat -"] = "ioctl _IOR 16 B, 1 retry (per call)"
	name["peek 4096"] = "ioctl + embedded pointer 4 KiB, 2 retries (per call)"
	base = ("go-base" in seen)
	if (base) {
		print "| benchmark | fusegate before | fusegate after | libfuse `-s` | libfuse multi-threaded | after ÷ before | before ÷ `-s` | after ÷ `-s` | after ÷ mt |"
		print "|---|---|---|---|---|---|---|---|---|"
	} else {
		print "| benchmark | fusegate (Go) | libfuse `-s` | libfuse multi-threaded | fusegate ÷ `-s` | fusegate ÷ mt |"
		print "|---|---|---|---|---|---|"
	}
	for (i = 1; i <= nk; i++) {
		k = order[i]; u = unit[k]
		g = median("go", k); s = median("c-st", k); m = median("c-mt", k)
		label = (k in name ? name[k] : k)
		if (base) {
			b = median("go-base", k)
			printf "| %s | %s | %s | %s | %s | %.2fx | %.2fx | %.2fx | %.2fx |\n", label, show(b, u), show(g, u), show(s, u), show(m, u), ratio(g, b, u), ratio(b, s, u), ratio(g, s, u), ratio(g, m, u)
		} else
			printf "| %s | %s | %s | %s | %.2fx | %.2fx |\n", label, show(g, u), show(s, u), show(m, u), ratio(g, s, u), ratio(g, m, u)
	}
	printf "\nMedians of %d runs each; ratios > 1 mean the first named is faster.\n", n["go", order[1]]
}
