//go:build unix

package handoff

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestSendConn(t *testing.T) {
	parent, child := pipePair(t)
	fd := tempFD(t, "conn")
	e := Entry{Kind: KindConn, Network: "tcp4", Addr: "127.0.0.1:8080"}
	if err := parent.SendConn(e, fd); err != nil {
		t.Fatal(err)
	}
	m, err := child.RecvMessage()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(m.FD)
	if m.Type != TypeConn || m.Entry != e {
		t.Errorf("RecvMessage = %v %+v, want CONN %+v", m.Type, m.Entry, e)
	}
	if identity(t, m.FD) != identity(t, fd) || !isCloexec(t, m.FD) {
		t.Errorf("received descriptor is not the sent file with close-on-exec")
	}
	if err := parent.SendConn(Entry{Kind: KindFile}, fd); err == nil {
		t.Error("SendConn of a file entry succeeded")
	}
}

func TestRecvConnMalformed(t *testing.T) {
	fd := tempFD(t, "conn")
	one := MarshalEntries([]Entry{{Kind: KindConn, Network: "tcp", Addr: "x"}})
	tests := []struct {
		name    string
		payload []byte
		fds     []int
		want    string
	}{
		{"no descriptor", one, nil, "arrived with 0 descriptors"},
		{"two descriptors", one, []int{fd, fd}, "arrived with 2 descriptors"},
		{"file entry", MarshalEntries([]Entry{{Kind: KindFile, Name: "f"}}), []int{fd}, "want one connection"},
		{"two entries", MarshalEntries([]Entry{{Kind: KindConn}, {Kind: KindConn}}), []int{fd}, "want one connection"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := rawPair(t)
			send(t, peer, AppendFrame(nil, TypeConn, tc.payload), tc.fds...)
			_, err := c.RecvMessage()
			wantMalformed(t, err, tc.want)
		})
	}
}
