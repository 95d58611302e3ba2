//go:build !unix

package molt

import "errors"

const platformSupported = false

var errClosedHandle = errors.New("molt: handle is closed")

func dupFD(liveHandle) (int, error)                       { return -1, ErrNotSupported }
func closeFD(int)                                         {}
func statSocketFile(string) (fileID, error)               { return fileID{}, ErrNotSupported }
func removeSocketFileIfSame(string, fileID) (bool, error) { return false, ErrNotSupported }
func isStaleSocket(string, string) bool                   { return false }
