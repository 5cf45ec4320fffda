package agent

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// fileRSS returns the resident file-backed memory of this process, in KiB.
func fileRSS(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		t.Skipf("no smaps_rollup: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss_File:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Skip("smaps_rollup has no Pss_File")
	return 0
}

func TestReleaseStartupPages(t *testing.T) {
	before := fileRSS(t)
	n, err := releaseStartupPages()
	if err != nil {
		t.Fatalf("releaseStartupPages: %v", err)
	}
	if n == 0 {
		t.Fatal("no mapping of the executable was advised")
	}
	after := fileRSS(t)
	t.Logf("file-backed RSS %d KiB -> %d KiB (%d bytes advised)", before, after, n)
	if after >= before {
		t.Fatalf("file-backed RSS did not drop: %d KiB -> %d KiB", before, after)
	}
}
