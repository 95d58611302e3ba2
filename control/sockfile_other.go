//go:build !unix

package control

import "os"

// Listen fails with ErrNotSupported before it needs any of these.

type socketDir struct{}

func openSocketDir(string) (*socketDir, error) { return nil, ErrNotSupported }

func (*socketDir) close() {}

func withCreationAttrs(_ os.FileMode, _ int, create func()) { create() }

func (*socketDir) settle(string, bool, fileID, os.FileMode, int) (socketFileState, error) {
	return socketFileState{}, ErrNotSupported
}
