package molt

import "golang.org/x/sys/unix"

// waitExitedNoReap blocks until the process has exited, leaving it
// unreaped (waitid with WNOWAIT), and reports true; see successor.wait.
func waitExitedNoReap(pid int) bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err == nil
		}
	}
}
