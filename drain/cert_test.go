package drain_test

import (
	"crypto/tls"

	"github.com/moltgo/molt/internal/testcert"
)

// testCert returns the process's self-signed certificate for loopback
// (each server generation is a process of its own, so each has its own;
// the test's clients do not verify it).
func testCert() tls.Certificate { return testcert.Must().TLS }
