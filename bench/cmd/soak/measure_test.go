package main

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestParseVmRSS(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status string
		kb     int64
		ok     bool
	}{
		{"linux", "Name:\tsoak\nVmPeak:\t 1269404 kB\nVmRSS:\t   12345 kB\nRssAnon:\t    4000 kB\n", 12345, true},
		{"first line", "VmRSS: 7 kB", 7, true},
		{"missing", "Name:\tsoak\nVmHWM:\t 100 kB\n", 0, false},
		{"not kB", "VmRSS:\t 12 MB\n", 0, false},
		{"not a number", "VmRSS:\t x kB\n", 0, false},
		{"prefix only", "VmRSSx:\t 5 kB\n", 0, false},
		{"empty", "", 0, false},
	} {
		kb, ok := parseVmRSS([]byte(tc.status))
		if kb != tc.kb || ok != tc.ok {
			t.Errorf("%s: parseVmRSS = %d, %v; want %d, %v", tc.name, kb, ok, tc.kb, tc.ok)
		}
	}
}

// dump is a runtime.Stack(all) dump in the format of Go 1.26: a goroutine
// serving a connection, one reading ahead, one of each not started yet,
// and three of the process's own.
const dump = `goroutine 7 [running]:
net/http.(*conn).serve(0xc000130000, {0x8f2a50, 0xc0000a4a50})
	/usr/local/go/src/net/http/server.go:2102 +0x625
created by net/http.(*Server).Serve in goroutine 6
	/usr/local/go/src/net/http/server.go:3464 +0x485

goroutine 1 [select]:
main.runServer()
	/work/main/bench/cmd/soak/server.go:120 +0x6b4
main.main()
	/work/main/bench/cmd/soak/main.go:131 +0x3c5

goroutine 9 [IO wait]:
internal/poll.runtime_pollWait(0x7f35e2a3d6d8, 0x72)
	/usr/local/go/src/runtime/netpoll.go:351 +0x85
net/http.(*connReader).backgroundRead(0xc0000c4030)
	/usr/local/go/src/net/http/server.go:690 +0x37
created by net/http.(*connReader).startBackgroundRead in goroutine 7
	/usr/local/go/src/net/http/server.go:686 +0xb6

goroutine 10 [runnable]:
net/http.(*Server).Serve.gowrap3()
	/usr/local/go/src/net/http/server.go:3464
runtime.goexit({})
	/usr/local/go/src/runtime/asm_amd64.s:1771 +0x1
created by net/http.(*Server).Serve in goroutine 6
	/usr/local/go/src/net/http/server.go:3464 +0x485

goroutine 11 [runnable]:
net/http.(*connReader).startBackgroundRead.gowrap2()
	/usr/local/go/src/net/http/server.go:686
runtime.goexit({})
	/usr/local/go/src/runtime/asm_amd64.s:1771 +0x1
created by net/http.(*connReader).startBackgroundRead in goroutine 7
	/usr/local/go/src/net/http/server.go:686 +0xb6

goroutine 6 [IO wait, 2 minutes]:
internal/poll.runtime_pollWait(0x7f35e2a3d7f0, 0x72)
	/usr/local/go/src/runtime/netpoll.go:351 +0x85
net/http.(*Server).Serve(0xc000176000, {0x8f1d00, 0xc000128040})
	/usr/local/go/src/net/http/server.go:3434 +0x30c
main.runServer.func2()
	/work/main/bench/cmd/soak/server.go:103 +0x25
created by main.runServer in goroutine 1
	/work/main/bench/cmd/soak/server.go:103 +0x5e5

goroutine 18 [syscall, locked to thread]:
os/signal.signal_recv()
	/usr/local/go/src/runtime/sigqueue.go:152 +0x29
os/signal.loop()
	/usr/local/go/src/os/signal/signal_unix.go:23 +0x13
created by os/signal.Notify.func1.1 in goroutine 1
	/usr/local/go/src/os/signal/signal.go:151 +0x1f
`

func TestCountGoroutines(t *testing.T) {
	total, conn, own := countGoroutines([]byte(dump))
	if total != 7 || conn != 4 {
		t.Errorf("countGoroutines = %d total, %d serving connections; want 7, 4", total, conn)
	}
	want := []string{"main.main [select]", "main.runServer.func2 [IO wait]", "os/signal.loop [syscall]"}
	if !slices.Equal(own, want) {
		t.Errorf("own goroutines = %q; want %q", own, want)
	}
}

// TestCountGoroutinesLive checks the classification against this Go
// version's real dumps: a server with a connection blocked in its handler.
func TestCountGoroutinesLive(t *testing.T) {
	inHandler, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inHandler)
		<-release
	}))
	defer srv.Close()
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-inHandler
	d := goroutineDump()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	total, conn, own := countGoroutines(d)
	if conn < 1 || total != conn+len(own) {
		t.Errorf("countGoroutines = %d total, %d serving connections, own %q", total, conn, own)
	}
	if !slices.ContainsFunc(own, func(s string) bool { return strings.HasPrefix(s, "testing.tRunner ") }) {
		t.Errorf("own goroutines %q: want the test's own (testing.tRunner)", own)
	}
}
