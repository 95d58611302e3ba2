//go:build unix

package handoff

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rights returns every descriptor in the SCM_RIGHTS messages of oob, the
// control data filled in by one recvmsg.
//
// The kernel writes well-formed control data, but when it truncates (see
// MSG_CTRUNC) some kernels (Darwin) leave cmsg_len at the untruncated size,
// which unix.ParseSocketControlMessage rejects. Descriptors that made it
// into the buffer are installed in this process all the same, so rights
// then falls back to a lenient walk that finds them and lets the caller
// close them.
func rights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return rightsLenient(oob)
	}
	var fds []int
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(m)
		if err != nil {
			continue // cannot happen for SCM_RIGHTS; ParseUnixRights only checks the type
		}
		fds = append(fds, got...)
	}
	return fds
}

// rightsLenient walks control messages whose last length may overrun oob,
// reading the descriptors that lie inside it.
func rightsLenient(oob []byte) []int {
	var fds []int
	hdrLen := unix.CmsgLen(0) // header plus alignment: where the data starts
	for len(oob) >= hdrLen {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdrLen {
			break
		}
		end := min(l, len(oob))
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
			for d := oob[hdrLen:end]; len(d) >= 4; d = d[4:] {
				fds = append(fds, int(int32(binary.NativeEndian.Uint32(d))))
			}
		}
		next := unix.CmsgSpace(l - hdrLen)
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return fds
}
