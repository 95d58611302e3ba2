package systemd

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxDatagram is the longest notification systemd reads (NOTIFY_BUFFER_MAX,
// PIPE_BUF); it drops longer datagrams.
const maxDatagram = 4096

// maxStatus bounds the text of a [Status] so that it always fits in one
// datagram together with the other assignments of a notification.
const maxStatus = 1024

// Assignment is one variable assignment of the notification protocol, such
// as READY=1 or STATUS=serving. Send assignments with [Notifier.Notify] or
// [Service.Notify]; one call sends them together, in one datagram, which
// systemd processes as a unit. The zero Assignment is invalid.
type Assignment struct {
	name, value string
	invalid     string // why the value cannot be sent; "" if it can
}

// The assignments without a value to choose. See sd_notify(3).
var (
	// Ready (READY=1) says that start-up, or a reload, is complete.
	Ready = Assignment{name: "READY", value: "1"}
	// Reloading (RELOADING=1) says that the service is reloading. Notify
	// adds MONOTONIC_USEC with the current CLOCK_MONOTONIC time, which
	// Type=notify-reload requires, unless the notification already has one.
	Reloading = Assignment{name: "RELOADING", value: "1"}
	// Stopping (STOPPING=1) says that the service is shutting down.
	Stopping = Assignment{name: "STOPPING", value: "1"}
	// WatchdogPing (WATCHDOG=1) keeps a service with WatchdogSec= alive.
	WatchdogPing = Assignment{name: "WATCHDOG", value: "1"}
)

// Status returns STATUS=text, the line `systemctl status` shows. The text
// is made one valid line: newlines and other control characters become
// spaces, invalid UTF-8 is replaced, and text beyond 1024 bytes is cut at a
// character boundary and marked with "…".
func Status(text string) Assignment {
	text = strings.ToValidUTF8(text, "\uFFFD")
	text = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, text)
	if len(text) > maxStatus {
		cut := maxStatus - len("…")
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "…"
	}
	return Assignment{name: "STATUS", value: text}
}

// MainPID returns MAINPID=pid, which makes pid the service's main process.
// systemd accepts it from the current main process (NotifyAccess=main), and
// only for a process of the service's control group. A pid below 1 makes
// the notification invalid.
func MainPID(pid int) Assignment {
	a := Assignment{name: "MAINPID", value: strconv.Itoa(pid)}
	if pid < 1 {
		a.invalid = fmt.Sprintf("MAINPID=%d is not a process ID", pid)
	}
	return a
}

// ExtendTimeout returns EXTEND_TIMEOUT_USEC for d, rounded up to a
// microsecond: if the service is beyond its start, runtime or stop timeout,
// systemd waits d more for the next notification instead of failing it. A d
// of zero or less makes the notification invalid.
func ExtendTimeout(d time.Duration) Assignment {
	if d <= 0 {
		return Assignment{name: "EXTEND_TIMEOUT_USEC", value: "0",
			invalid: fmt.Sprintf("EXTEND_TIMEOUT_USEC for %v: want a positive duration", d)}
	}
	us := (d + time.Microsecond - 1) / time.Microsecond
	return Assignment{name: "EXTEND_TIMEOUT_USEC", value: strconv.FormatInt(int64(us), 10)}
}

// monotonicUsec is MONOTONIC_USEC=t, t a CLOCK_MONOTONIC time.
func monotonicUsec(t time.Duration) Assignment {
	return Assignment{name: "MONOTONIC_USEC", value: strconv.FormatInt(int64(t/time.Microsecond), 10)}
}

// String returns the assignment as it is sent: "NAME=value".
func (a Assignment) String() string { return a.name + "=" + a.value }

// Notifier sends notifications to the service manager over the datagram
// socket named by NOTIFY_SOCKET (sd_notify(3)): a file system path, or an
// abstract socket written "@name". Create it with [NewNotifier]. A Notifier
// holds no descriptor between calls, and its methods are safe for
// concurrent use.
//
// Which process may notify is systemd's decision (NotifyAccess=): with
// NotifyAccess=main, what this process sends while it is not the service's
// main process is dropped, with a warning in the journal. [Service] only
// sends while its process is the main process.
type Notifier struct {
	addr string // NOTIFY_SOCKET: an absolute path or "@abstract"
}

// NewNotifier returns a Notifier for the socket named by NOTIFY_SOCKET. It
// fails with [ErrNoNotifySocket] if the variable is unset or empty, with
// [ErrInvalidEnv] if it is neither an absolute path nor an abstract socket
// name (vsock addresses are not supported), and with [ErrNotSupported] for
// an abstract socket outside Linux. The variable is left in place, so the
// next generation of the service, started with this environment, can
// notify too.
func NewNotifier() (*Notifier, error) {
	addr, err := parseNotifySocket(os.Getenv("NOTIFY_SOCKET"))
	if err != nil {
		return nil, err
	}
	return &Notifier{addr: addr}, nil
}

// parseNotifySocket checks a NOTIFY_SOCKET value and returns the address
// to send to.
func parseNotifySocket(v string) (string, error) {
	const sunPath = 108 // sizeof(sockaddr_un.sun_path) on Linux
	switch {
	case v == "":
		return "", ErrNoNotifySocket
	case strings.ContainsRune(v, 0):
		return "", fmt.Errorf("%w: NOTIFY_SOCKET=%q contains a NUL byte", ErrInvalidEnv, v)
	case strings.HasPrefix(v, "vsock:"):
		return "", fmt.Errorf("%w: NOTIFY_SOCKET=%q: vsock addresses are not supported", ErrInvalidEnv, v)
	case v[0] == '/':
		if len(v) >= sunPath {
			return "", fmt.Errorf("%w: NOTIFY_SOCKET=%q: path longer than %d bytes", ErrInvalidEnv, v, sunPath-1)
		}
		return v, nil
	case v[0] == '@':
		if len(v) == 1 || len(v) > sunPath {
			return "", fmt.Errorf("%w: NOTIFY_SOCKET=%q: abstract name empty or longer than %d bytes", ErrInvalidEnv, v, sunPath-1)
		}
		if runtime.GOOS != "linux" && runtime.GOOS != "android" {
			return "", fmt.Errorf("%w: NOTIFY_SOCKET=%q: abstract sockets exist only on Linux", ErrNotSupported, v)
		}
		return v, nil
	}
	return "", fmt.Errorf("%w: NOTIFY_SOCKET=%q is neither an absolute path nor an abstract socket (@name)", ErrInvalidEnv, v)
}

// String returns the socket the Notifier sends to.
func (n *Notifier) String() string { return n.addr }

// Notify sends the assignments to systemd in one datagram, in the order
// given; RELOADING=1 gets MONOTONIC_USEC if it has none. It returns once
// the datagram is queued on systemd's socket, not when systemd processed
// it ([Notifier.Barrier] waits for that).
//
// Notify blocks only while systemd's socket queue is full, until ctx ends
// (it then returns ctx's error). It fails with [ErrInvalidMessage] for an
// invalid assignment or a datagram longer than 4096 bytes, and with the
// socket's error if systemd's socket is gone. With no assignments it sends
// nothing and returns nil.
func (n *Notifier) Notify(ctx context.Context, a ...Assignment) error {
	msg, err := encode(a)
	if err != nil || msg == nil {
		return err
	}
	return n.send(ctx, msg, nil)
}

// Barrier waits until systemd has processed every notification this
// process sent before the call (BARRIER=1, as sd_notify_barrier(3)): it
// sends one end of a new pipe and waits for systemd to close it. Use it
// before exiting, when systemd must have seen a notification first.
//
// It returns nil then, or ctx's error if ctx ends first. Systemd older than
// version 246 does not know BARRIER=1 and closes the pipe all the same.
func (n *Notifier) Barrier(ctx context.Context) error {
	return n.barrier(ctx)
}

// encode validates the assignments and joins them into one datagram. It
// returns nil for none.
func encode(as []Assignment) ([]byte, error) {
	if len(as) == 0 {
		return nil, nil
	}
	monotonic := false
	for _, a := range as {
		if a.invalid != "" {
			return nil, fmt.Errorf("%w: %s", ErrInvalidMessage, a.invalid)
		}
		if !validVarName(a.name) || strings.ContainsAny(a.value, "\n\x00") {
			return nil, fmt.Errorf("%w: %q is not an assignment (the zero Assignment?)", ErrInvalidMessage, a.String())
		}
		monotonic = monotonic || a.name == "MONOTONIC_USEC"
	}
	var b []byte
	for _, a := range as {
		if len(b) > 0 {
			b = append(b, '\n')
		}
		b = append(b, a.String()...)
		if a == Reloading && !monotonic {
			now, err := monotonicNow()
			if err != nil {
				return nil, err
			}
			b = append(b, '\n')
			b = append(b, monotonicUsec(now).String()...)
			monotonic = true
		}
	}
	if len(b) > maxDatagram {
		return nil, fmt.Errorf("%w: %d bytes, systemd reads at most %d", ErrInvalidMessage, len(b), maxDatagram)
	}
	return b, nil
}

// validVarName reports whether s is a variable name of the protocol:
// upper-case letters, digits and underscores.
func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
