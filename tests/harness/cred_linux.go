package harness

import (
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
)

// Cred is the identity a child process runs with.
type Cred struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups; nil means none
}

// Root returns uid 0, gid 0, no supplementary groups.
func Root() Cred { return Cred{} }

// Nobody returns the unprivileged uid and gid 65534 (Debian's nobody and
// nogroup), no supplementary groups.
func Nobody() Cred { return Cred{UID: 65534, GID: 65534} }

// Self returns the test process's own effective credentials.
func Self() Cred {
	c := Cred{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
	if gs, err := os.Getgroups(); err == nil {
		for _, g := range gs {
			c.Groups = append(c.Groups, uint32(g))
		}
	}
	return c
}

func (c Cred) String() string {
	return fmt.Sprintf("uid=%d gid=%d groups=%v", c.UID, c.GID, c.Groups)
}

// sysCred returns the SysProcAttr credential to start a child as c, or nil
// when c is the test process's own identity. Switching identity needs root:
// without it the test is skipped (or failed, see EnvRequire).
func sysCred(t testing.TB, c *Cred) *syscall.Credential {
	t.Helper()
	if c == nil {
		return nil
	}
	self := Self()
	if c.UID == self.UID && c.GID == self.GID && slices.Equal(c.Groups, self.Groups) {
		return nil
	}
	if os.Geteuid() != 0 {
		Missing(t, FeatureRoot, "running a child as %v needs root; this test runs as uid %d", *c, os.Geteuid())
	}
	return &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: c.Groups}
}
