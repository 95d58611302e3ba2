package systemd_test

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
)

// The test binary plays the processes the tests need — a service under a
// real systemd, molt successors, a socket-activated process — chosen by
// envRole; each role is a short main using the package as a service would.
const envRole = "MOLT_SYSTEMD_ROLE"

var (
	roles     = map[string]func() int{} // filled by the role files' init functions
	rolesMu   sync.Mutex
	rolesUsed = map[string]bool{}
)

// useRole returns the environment entry that makes a process play role, and
// records that a test used it.
func useRole(t testing.TB, role string) string {
	t.Helper()
	if _, ok := roles[role]; !ok {
		t.Fatalf("no test role %q", role)
	}
	rolesMu.Lock()
	rolesUsed[role] = true
	rolesMu.Unlock()
	return envRole + "=" + role
}

func TestMain(m *testing.M) {
	if name := os.Getenv(envRole); name != "" {
		role, ok := roles[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown test role %q\n", name)
			os.Exit(2)
		}
		os.Exit(role())
	}
	code := m.Run()
	// A role no test used is dead code, unless tests were filtered.
	if code == 0 && flag.Lookup("test.run").Value.String() == "" && !testing.Short() {
		var unused []string
		for name := range roles {
			if !rolesUsed[name] {
				unused = append(unused, name)
			}
		}
		sort.Strings(unused)
		if len(unused) > 0 {
			fmt.Fprintf(os.Stderr, "test roles no test used: %v\n", unused)
			code = 1
		}
	}
	os.Exit(code)
}
