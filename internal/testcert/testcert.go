// Package testcert makes the self-signed certificate that tests and the
// benchmarks serve TLS with on loopback: ECDSA P-256, valid for 127.0.0.1,
// ::1 and localhost, generated in memory once per process.
//
// It is not a test-only package because the benchmark servers (another
// module's commands) use it too; it has no other use and nothing in molt
// itself imports it.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"
)

// validity is how long the certificate is valid after it was made (and
// for an hour before, for clocks slightly behind).
const validity = 7 * 24 * time.Hour

// Cert is the certificate with its key, in both forms.
type Cert struct {
	TLS     tls.Certificate // the leaf and its key, Leaf set
	CertPEM []byte          // the certificate, PEM "CERTIFICATE"
	KeyPEM  []byte          // the key, PEM "PRIVATE KEY" (PKCS #8)
}

// Pool returns a pool that trusts only c: a client configured with it
// verifies the server instead of skipping verification.
func (c *Cert) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.TLS.Leaf)
	return p
}

var loopback = sync.OnceValues(generate)

// Loopback returns this process's certificate, made at the first call.
// The returned value is shared: do not modify it.
func Loopback() (*Cert, error) { return loopback() }

// Must is Loopback for tests: it panics if the certificate cannot be
// made.
func Must() *Cert {
	c, err := Loopback()
	if err != nil {
		panic(err)
	}
	return c
}

func generate() (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testcert: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("testcert: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "molt test"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // self-signed: it is its own root in Pool
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testcert: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testcert: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("testcert: %w", err)
	}
	return &Cert{
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}, nil
}
