//go:build unix

package handoff

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestWaitReadable: WaitReadable returns once a frame is there (and the
// frame is then read whole), at the end of the stream, at the deadline,
// and when the Conn is closed during the wait.
func TestWaitReadable(t *testing.T) {
	t.Run("frame", func(t *testing.T) {
		parent, child := pipePair(t)
		done := make(chan error, 1)
		go func() { done <- child.WaitReadable(time.Now().Add(time.Minute)) }()
		if err := parent.SendAck(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("WaitReadable with an ACK sent: %v", err)
		}
		if m, err := child.RecvMessage(); err != nil || m.Type != TypeAck {
			t.Fatalf("after WaitReadable: %v, %v; want the ACK", m.Type, err)
		}
	})
	t.Run("end of stream", func(t *testing.T) {
		parent, child := pipePair(t)
		parent.Close()
		if err := child.WaitReadable(time.Now().Add(time.Minute)); err != nil {
			t.Fatalf("WaitReadable after the peer closed: %v", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		_, child := pipePair(t)
		err := child.WaitReadable(time.Now().Add(30 * time.Millisecond))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("WaitReadable with nothing sent: %v, want the deadline", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		_, child := pipePair(t)
		done := make(chan error, 1)
		go func() { done <- child.WaitReadable(time.Time{}) }()
		// Whether Close comes before the wait or during it, the wait ends
		// with net.ErrClosed (and Close itself returns: it does not wait
		// for a wait that never ends).
		child.Close()
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("WaitReadable on a closed Conn: %v, want net.ErrClosed", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("WaitReadable did not return after Close")
		}
	})
}
