package control

import (
	"fmt"
	"os"
)

// newTempHistoryFile returns an unnamed temporary file: created in the
// temporary directory and removed at once, so nothing is left behind
// whatever happens to the chain.
func newTempHistoryFile() (*os.File, error) {
	f, err := os.CreateTemp("", "molt-control-history-*")
	if err != nil {
		return nil, fmt.Errorf("control: history file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("control: history file: %w", err)
	}
	return f, nil
}
