//go:build !linux && !darwin && !freebsd

package peercred

// Supported reports whether Of works on this system.
const Supported = false

// Of is not available: x/sys/unix has no peer-credential call for
// this system. Servers that authenticate by it must refuse to serve.
func Of(int) (Cred, error) { return unknown, ErrNotSupported }
