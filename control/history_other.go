//go:build !linux

package control

import "os"

func newHistoryFile() (*os.File, error) { return newTempHistoryFile() }
