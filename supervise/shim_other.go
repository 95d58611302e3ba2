//go:build !unix

package supervise

// ExecShim does nothing on this platform.
func ExecShim() {}
