//go:build unix

package molt_test

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/moltgo/molt"
)

// Steady-state cost of a molt listener against a plain net.Listen (the
// DESIGN target is a throughput ratio of at least 0.99). Compare the
// plain and molt halves with benchstat:
//
//	go test -run '^$' -bench 'Accept|ServeHTTP' -count 10 . | tee accept.txt
//	benchstat -col /listener accept.txt

// listeners runs bench once with a plain listener and once with a molt one.
func listeners(b *testing.B, bench func(b *testing.B, ln net.Listener)) {
	b.Run("listener=plain", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		bench(b, ln)
	})
	b.Run("listener=molt", func(b *testing.B) {
		u, err := molt.New(molt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer u.Stop()
		ln, err := u.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		bench(b, ln)
	})
}

// BenchmarkAccept: each iteration dials, accepts and closes one loopback
// connection, so the cost of Accept and of the connection's wrapper shows.
func BenchmarkAccept(b *testing.B) {
	listeners(b, func(b *testing.B, ln net.Listener) {
		addr := ln.Addr().String()
		for b.Loop() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			s, err := ln.Accept()
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
			c.Close()
		}
	})
}

// BenchmarkServeHTTP: keep-alive GETs from parallel clients to an
// http.Server on the listener, so every read and write of a served
// connection goes through the listener's connections.
func BenchmarkServeHTTP(b *testing.B) {
	listeners(b, func(b *testing.B, ln net.Listener) {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		})}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		defer func() {
			srv.Close()
			<-served
		}()
		tr := &http.Transport{MaxIdleConnsPerHost: 64}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		url := "http://" + ln.Addr().String() + "/"
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := client.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	})
}
