//go:build unix && !linux

package proctest

import "time"

func procState(int) (byte, bool) { return 0, false }

func awaitExit(int, time.Duration) (done, ok bool) { return false, false }
