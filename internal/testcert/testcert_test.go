package testcert_test

import (
	"bytes"
	"crypto/tls"
	"net"
	"testing"

	"github.com/moltgo/molt/internal/testcert"
)

// TestLoopback checks that the certificate is made once, that its PEM
// form loads back into the same pair, and that a client trusting only
// Pool completes a handshake with it on 127.0.0.1, ::1 and localhost.
func TestLoopback(t *testing.T) {
	c, err := testcert.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	if again := testcert.Must(); again != c {
		t.Fatal("a second call made another certificate")
	}
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatalf("the PEM does not load: %v", err)
	}
	if !bytes.Equal(pair.Certificate[0], c.TLS.Certificate[0]) {
		t.Fatal("the PEM certificate is not the one in TLS")
	}
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if err := c.TLS.Leaf.VerifyHostname(name); err != nil {
			t.Errorf("VerifyHostname(%q): %v", name, err)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer nc.Close()
		served <- tls.Server(nc, &tls.Config{Certificates: []tls.Certificate{pair}}).Handshake()
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	tc := tls.Client(nc, &tls.Config{RootCAs: c.Pool(), ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}
