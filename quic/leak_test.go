//go:build unix

package quic_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/proctest"
	moltquic "github.com/moltgo/molt/quic"
	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// TestNoLeaks: a generation that serves HTTP/3 on a PacketConn and stops
// leaves no goroutine and no descriptor behind, and answers meanwhile.
func TestNoLeaks(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	fds := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs)

	u, err := molt.New(molt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := moltquic.ListenPacket(u, "udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := moltquic.ListenPacket(u, "tcp", "127.0.0.1:0"); err == nil {
		t.Error("ListenPacket took network tcp")
	}
	tr := pc.Transport()
	ln, err := tr.ListenEarly(serverTLS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http3.Server{Handler: handler(u.Generation())}
	served := make(chan error, 1)
	go func() { served <- srv.ServeListener(ln) }()
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}

	// one request from a client in this process
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctr := &quicgo.Transport{Conn: udp}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := ctr.Dial(ctx, pc.LocalAddr(), clientTLS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cc := (&http3.Transport{}).NewClientConn(conn)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+pc.LocalAddr().String()+"/", nil)
	rsp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if string(b) != "gen=1\n" {
		t.Errorf("answer %q", b)
	}
	if st := pc.Stats(); st.Received == 0 || st.Forwarded != 0 {
		t.Errorf("stats %+v: want datagrams received, none forwarded (no older generation)", st)
	}
	conn.CloseWithError(0, "")
	ctr.Close()
	udp.Close()

	dctx, dcancel := context.WithTimeout(context.Background(), time.Minute)
	defer dcancel()
	if err := moltquic.DrainHTTP3(dctx, srv, ln); err != nil {
		t.Errorf("DrainHTTP3: %v", err)
	}
	<-served
	tr.Close()
	if err := pc.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	pc.Close() // again: nothing happens
	u.Stop()
	proctest.CheckGoroutines(t, "after Stop", goroutines)
	proctest.CheckFDsAtMost(t, "after Stop", os.Getpid(), proctest.AllFDs, fds) // at most: earlier tests' descriptors may close meanwhile
}
