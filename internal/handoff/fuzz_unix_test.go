//go:build unix

package handoff

import (
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt/internal/proctest"
)

// FuzzConnRecv writes arbitrary bytes into one end of a Pair, with nfds
// descriptors attached to the write that starts at offset at, and runs the
// receiving side of the conversation on the other end. It must not panic,
// hang or leak descriptors.
//
// Coverage of the runtime's network poller varies from run to run, so this
// target keeps finding "new" inputs, and by default each is minimized for up
// to 60s, during which the execs counter stands still. Run it with
// -fuzzminimizetime=200x to keep it fuzzing.
func FuzzConnRecv(f *testing.F) {
	hello := AppendFrame(nil, TypeHello, Hello{Generation: 2, ParentPID: 1, Entries: 2}.Marshal())
	inv := AppendFrame(nil, TypeInventory, MarshalEntries([]Entry{{Kind: KindFile, Name: "a"}, {Kind: KindListener, Network: "tcp", Addr: ":80"}}))
	var good []byte
	good = append(good, hello...)
	good = append(good, inv...)
	good = AppendFrame(good, TypeAck, nil)
	at := uint16(len(hello))
	f.Add([]byte{}, uint8(0), uint16(0))
	f.Add(hello, uint8(0), uint16(0))
	f.Add(good, uint8(2), at)
	f.Add(good, uint8(2), uint16(0))
	f.Add(good, uint8(1), at)
	f.Add(good, uint8(3), at)
	f.Add(append(hello, inv[:9]...), uint8(2), at)
	f.Add(AppendFrame(nil, TypeReady, nil), uint8(3), uint16(0))
	f.Add(inv, uint8(250), uint16(0))
	withState := AppendFrame(nil, TypeHello, Hello{Generation: 2, ParentPID: 1, Entries: 2, State: true}.Marshal())
	withState = append(withState, inv...)
	withState = append(withState, AppendFrame(nil, TypeState, StateHeader{Size: 5, Version: "v1"}.Marshal())...)
	withState = AppendFrame(withState, TypeState, []byte("ab"))
	withState = AppendFrame(withState, TypeState, []byte("cde"))
	withState = AppendFrame(withState, TypeAck, nil)
	f.Add(withState, uint8(2), at)
	f.Add(withState, uint8(1), uint16(len(withState)-6-5-3))
	f.Fuzz(func(t *testing.T, data []byte, nfds uint8, at uint16) {
		before := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs)
		fuzzConnRecv(t, data, int(nfds)%254, int(at)%(len(data)+1)) // SCM_MAX_FD is 253
		if after := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs); after != before {
			t.Fatalf("%d descriptors open before, %d after", before, after)
		}
	})
}

// fuzzConnRecv runs one FuzzConnRecv case and reports how far the
// conversation got: the number of entries received, or -1 without a HELLO.
func fuzzConnRecv(t *testing.T, data []byte, nfds, at int) int {
	c, cf, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	fc, err := net.FileConn(cf)
	cf.Close()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	peer := fc.(*net.UnixConn)
	null, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer peer.Close()
		defer unix.Close(null)
		if _, err := peer.Write(data[:at]); err != nil {
			return
		}
		var oob []byte
		if nfds > 0 && at < len(data) {
			fds := make([]int, nfds)
			for i := range fds {
				fds[i] = null
			}
			oob = unix.UnixRights(fds...)
		}
		for b := data[at:]; len(b) > 0; {
			n, _, err := peer.WriteMsgUnix(b, oob, nil)
			if err != nil {
				return
			}
			b, oob = b[n:], nil
		}
	}()

	got := -1
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if h, err := c.RecvHello(); err == nil {
		es, fds, err := c.RecvInventory(h.Entries)
		if err == nil {
			if len(es) != h.Entries || len(fds) != h.Entries {
				t.Fatalf("RecvInventory(%d) gave %d entries, %d fds", h.Entries, len(es), len(fds))
			}
			got = len(es)
		}
		closeFDs(fds)
		if err == nil && h.State {
			if _, data, err := c.RecvState(); err == nil && len(data) > MaxState {
				t.Fatalf("RecvState gave %d bytes", len(data))
			}
		}
	}
	for range 8 {
		if _, err := c.RecvMessage(); err != nil {
			break
		}
	}
	c.Close()
	<-done
	return got
}
