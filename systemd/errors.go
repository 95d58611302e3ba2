package systemd

import "errors"

// Errors of this package. Compare with [errors.Is]; they are wrapped with
// the detail that says which variable, name or address was at fault.
var (
	// ErrNoNotifySocket is returned by [NewNotifier] when NOTIFY_SOCKET is
	// not set: the process was not started by systemd as a Type=notify or
	// Type=notify-reload service (or the variable was removed).
	ErrNoNotifySocket = errors.New("systemd: NOTIFY_SOCKET is not set (not started as a Type=notify or notify-reload service)")

	// ErrNotSupported is returned on platforms without Unix datagram
	// sockets and descriptor passing (Windows, Plan 9, js/wasm) by every
	// call that would need them.
	ErrNotSupported = errors.New("systemd: not supported on this platform")

	// ErrInvalidEnv is returned by [NewNotifier] and [Attach] when one of
	// the variables systemd sets (NOTIFY_SOCKET, LISTEN_PID, LISTEN_FDS,
	// LISTEN_FDNAMES, WATCHDOG_USEC, WATCHDOG_PID) has a value systemd
	// would never set. The error names the variable and the value.
	ErrInvalidEnv = errors.New("systemd: invalid environment variable")

	// ErrInvalidMessage is returned by [Notifier.Notify] and its siblings
	// for a notification systemd would reject or ignore: an assignment
	// built from a bad value ([MainPID] of 0, a negative
	// [ExtendTimeout]), an invalid descriptor name, or a datagram longer
	// than systemd reads (4096 bytes).
	ErrInvalidMessage = errors.New("systemd: invalid notification")

	// ErrNotMain is returned by [Service.Notify] when this process is not
	// the service's main process as far as systemd knows: a successor
	// before it became ready, or a generation that handed over to its
	// successor and only drains.
	ErrNotMain = errors.New("systemd: this process is not the service's main process")

	// ErrNotFound is returned by [Service.Listener] and
	// [Service.PacketConn] when neither the previous generation nor
	// systemd passed a socket of that name.
	ErrNotFound = errors.New("systemd: no socket with that name")

	// ErrClaimed is returned by the socket methods of [Service] for a name
	// this process already claimed.
	ErrClaimed = errors.New("systemd: socket already claimed")

	// ErrAddrMismatch is returned by [Service.Listen] when the socket
	// passed under a name is bound to another address than the one asked
	// for (a .socket unit and the service disagree, or a generation's
	// configuration moved a name to another address).
	ErrAddrMismatch = errors.New("systemd: socket bound to another address")

	// ErrWrongType is returned by the socket methods of [Service] when the
	// descriptor passed under a name is not what was asked for: not a
	// socket, a connected rather than a listening socket (Accept=yes), or
	// a stream socket asked for as a packet socket.
	ErrWrongType = errors.New("systemd: descriptor is not that kind of socket")

	// ErrTooLate is returned by [Attach] for an Upgrader that is past its
	// start (Ready was called, or Stop): the sockets systemd passed and
	// the first notifications belong before Ready.
	ErrTooLate = errors.New("systemd: Attach must be called before the Upgrader is ready")
)
