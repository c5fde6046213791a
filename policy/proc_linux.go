package policy

import (
	"os"
	"strconv"
	"strings"
)

// processName reads /proc/<pid>/comm. It returns "" when the process is
// gone or unreadable.
func processName(pid uint32) string {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}
