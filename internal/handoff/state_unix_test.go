//go:build unix

package handoff

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestStateConversation sends states of several sizes, from empty to
// several frames with a short last one, between a HELLO that announces
// them and the ACK, and checks what arrives: the same bytes, in one
// buffer of the announced size, never copied through the frame buffer.
func TestStateConversation(t *testing.T) {
	for _, size := range []int{0, 1, MaxPayload - 1, MaxPayload, MaxPayload + 1, 3*MaxPayload + 17} {
		parent, child := pipePair(t)
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*7 + i>>20)
		}
		errc := make(chan error, 1)
		go func() {
			parent.SetWriteDeadline(time.Now().Add(30 * time.Second))
			err := parent.SendHello(Hello{Generation: 2, ParentPID: 1, State: true})
			if err == nil {
				err = parent.SendState("counters/v1", data)
			}
			if err == nil {
				err = parent.SendAck()
			}
			errc <- err
		}()
		child.SetReadDeadline(time.Now().Add(30 * time.Second))
		h, err := child.RecvHello()
		if err != nil || !h.State {
			t.Fatalf("RecvHello = %+v, %v; want State", h, err)
		}
		version, got, err := child.RecvState()
		if err != nil {
			t.Fatalf("size %d: RecvState: %v", size, err)
		}
		if version != "counters/v1" || !bytes.Equal(got, data) || cap(got) != size {
			t.Fatalf("size %d: RecvState = %q, %d bytes (cap %d), equal=%t", size, version, len(got), cap(got), bytes.Equal(got, data))
		}
		if cap(child.rbuf) > 1024 {
			t.Errorf("size %d: the frame buffer grew to %d bytes: the data went through it", size, cap(child.rbuf))
		}
		if m, err := child.RecvMessage(); err != nil || m.Type != TypeAck {
			t.Fatalf("after the state: %+v, %v; want ACK", m, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("size %d: send: %v", size, err)
		}
	}
}

func TestSendStateErrors(t *testing.T) {
	c, peer := rawPair(t)
	if err := c.SendState("v", make([]byte, MaxState+1)); err == nil || !strings.Contains(err.Error(), "cannot send 67108865 bytes of state (at most 67108864)") {
		t.Errorf("SendState(too large) = %v", err)
	}
	if err := c.SendState(strings.Repeat("v", MaxStateVersion+1), nil); err == nil || !strings.Contains(err.Error(), "state version of 257 bytes") {
		t.Errorf("SendState(long version) = %v", err)
	}
	// Nothing was written: the next frame is the first the peer sees.
	if err := c.SendAck(); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 16)
	n, err := peer.Read(b)
	if err != nil || !bytes.Equal(b[:n], AppendFrame(nil, TypeAck, nil)) {
		t.Fatalf("peer read %x, %v; want only the ACK", b[:n], err)
	}
}

// TestSendStateBrokenIsSticky: a state cut off after its header leaves
// the Conn unusable for writes.
func TestSendStateBrokenIsSticky(t *testing.T) {
	c, peer := rawPair(t)
	peer.Close()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := c.SendState("v", make([]byte, 2*MaxPayload))
	if err == nil {
		t.Fatal("SendState to a closed peer succeeded")
	}
	if err2 := c.SendAck(); err2 == nil {
		t.Errorf("SendAck after a failed SendState succeeded")
	}
}

func recvState(c *Conn) error {
	v, data, err := c.RecvState()
	if err == nil {
		return errors.New("RecvState succeeded")
	}
	if v != "" || data != nil {
		return errors.New("RecvState returned data with an error")
	}
	return err
}

// stateHeader is the first STATE frame of a state of size bytes.
func stateHeader(size int) []byte {
	return AppendFrame(nil, TypeState, StateHeader{Size: size, Version: "v1"}.Marshal())
}

func init() {
	errorCases = append(errorCases, []errorCase{{
		name:  "ACK instead of STATE",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, AppendFrame(nil, TypeAck, nil)) },
		recv:  recvState,
		check: malformedWith("expected STATE, got ACK"),
	}, {
		name:  "STATE header with a descriptor",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, stateHeader(0), fd) },
		recv:  recvState,
		check: malformedWith("STATE frame arrived with 1 descriptor"),
	}, {
		name: "STATE data with a descriptor",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, stateHeader(3))
			send(t, p, AppendFrame(nil, TypeState, []byte("abc")), fd, fd)
		},
		recv:  recvState,
		check: malformedWith("STATE frame arrived with 2 descriptors"),
	}, {
		name:  "STATE announcing too much",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, stateHeader(MaxState+1)) },
		recv:  recvState,
		check: malformedWith("more than 67108864"),
	}, {
		name: "STATE data longer than announced",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, append(stateHeader(3), AppendFrame(nil, TypeState, []byte("abcd"))...))
		},
		recv:  recvState,
		check: malformedWith("STATE data frame of 4 bytes exceeds the 3 still expected"),
	}, {
		name: "empty STATE data frame",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, append(stateHeader(3), AppendFrame(nil, TypeState, nil)...))
		},
		recv:  recvState,
		check: malformedWith("empty STATE data frame"),
	}, {
		name: "ACK inside the state",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			b := append(stateHeader(5), AppendFrame(nil, TypeState, []byte("ab"))...)
			send(t, p, AppendFrame(b, TypeAck, nil))
		},
		recv:  recvState,
		check: malformedWith("expected STATE data (3 bytes still expected), got ACK"),
	}, {
		name: "EOF between state frames",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, append(stateHeader(5), AppendFrame(nil, TypeState, []byte("ab"))...))
			p.Close()
		},
		recv:  recvState,
		check: isErr(io.ErrUnexpectedEOF),
	}, {
		name: "EOF inside state data",
		peer: func(t *testing.T, p *net.UnixConn, fd int) {
			send(t, p, append(stateHeader(5), AppendFrame(nil, TypeState, []byte("abcde"))[:9]...))
			p.Close()
		},
		recv:  recvState,
		check: isErr(io.ErrUnexpectedEOF),
	}, {
		name:  "STATE where a message is expected",
		peer:  func(t *testing.T, p *net.UnixConn, fd int) { send(t, p, stateHeader(0)) },
		recv:  recvMessage,
		check: malformedWith("unexpected STATE frame"),
	}}...)
}

// TestRecvStateEOFBeforeHeader: a stream that ends where the state should
// begin is a clean io.EOF, as between any two frames.
func TestRecvStateEOFBeforeHeader(t *testing.T) {
	c, peer := rawPair(t)
	peer.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := c.RecvState(); err != io.EOF {
		t.Fatalf("RecvState = %v, want io.EOF", err)
	}
}
