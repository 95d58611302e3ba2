//go:build !linux && !darwin && !freebsd

package control

const credSupported = false

// peerCred is not available: x/sys/unix has no peer-credential call for
// this system. Listen refuses to serve without it.
func peerCred(int) (peer, error) { return peer{-1, -1, -1}, ErrNotSupported }
