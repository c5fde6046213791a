# Summarises guest.sh's "result IMPL MODE PARAM VALUE UNIT" lines: the median
# of each benchmark per implementation, and fusegate's ratio to each libfuse
# variant (> 1: fusegate is faster).
function median(impl, k,   m, i, j, t, a) {
	m = n[impl, k]
	for (i = 1; i <= m; i++) a[i] = v[impl, k, i]
	for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
function show(x, u) { return u == "MB/s" ? sprintf("%.1f MB/s", x) : sprintf("%.0f µs", x / 1000) }
$1 == "result" {
	k = $3 " " $4
	if (!(k in unit)) order[++nk] = k
	v[$2, k, ++n[$2, k]] = $5
	unit[k] = $6
}
END {
	name["rw 4096"] = "write+read 4 KiB (MB/s each way)"
	name["rw 131072"] = "write+read 128 KiB (MB/s each way)"
	name["nbread -"] = "empty O_NONBLOCK read, EAGAIN (per call)"
	name["stat -"] = "ioctl _IOR 16 B, 1 retry (per call)"
	name["peek 4096"] = "ioctl + embedded pointer 4 KiB, 2 retries (per call)"
	print "| benchmark | fusegate (Go) | libfuse `-s` | libfuse multi-threaded | fusegate ÷ `-s` | fusegate ÷ mt |"
	print "|---|---|---|---|---|---|"
	for (i = 1; i <= nk; i++) {
		k = order[i]
		g = median("go", k); s = median("c-st", k); m = median("c-mt", k)
		if (unit[k] == "MB/s") { rs = g / s; rm = g / m } else { rs = s / g; rm = m / g }
		printf "| %s | %s | %s | %s | %.2fx | %.2fx |\n", (k in name ? name[k] : k), show(g, unit[k]), show(s, unit[k]), show(m, unit[k]), rs, rm
	}
	printf "\nMedians of %d runs each; ratios > 1 mean fusegate is faster.\n", n["go", order[1]]
}
