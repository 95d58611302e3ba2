package systemd

// PassedFD is a descriptor systemd passed to this process by socket
// activation or from the file descriptor store, numbered from 3.
type PassedFD struct {
	FD   int    // the descriptor, marked close-on-exec
	Name string // its LISTEN_FDNAMES entry, "unknown" without one
}

// PassedFDs returns the descriptors systemd passed to this process, for a
// process that hands them on to others rather than serve them itself
// (the supervisor of "molt run"); a molt service uses [Attach]. It reads
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES as sd_listen_fds_with_names(3)
// does and removes them from the environment, checks that each descriptor
// is open and marks it close-on-exec. Nothing passed is not an error;
// variables systemd would never set are an error wrapping
// [ErrInvalidEnv].
func PassedFDs() ([]PassedFD, error) {
	passed, err := listenFDsFromEnv()
	if err != nil {
		return nil, err
	}
	out := make([]PassedFD, len(passed))
	for i, p := range passed {
		out[i] = PassedFD{FD: p.fd, Name: p.name}
	}
	return out, nil
}
