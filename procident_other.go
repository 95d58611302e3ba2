//go:build !unix

package molt

// processStart reports no process as running: without Unix descriptor
// passing there are no other generations ([New] returns
// [ErrNotSupported]).
func processStart(int) (start uint64, running bool) { return 0, false }
