package supervise

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// Defaults of [Options].
const (
	DefaultGrace      = time.Minute
	DefaultDrain      = 30 * time.Second
	DefaultStopSignal = syscall.SIGTERM
)

// Socket is a listening socket the supervisor creates and passes to every
// instance under Name (LISTEN_FDNAMES).
type Socket struct {
	Name    string
	Network string // "tcp", "tcp4", "tcp6" or "unix"
	Address string // host:port, or a path
}

func (s Socket) String() string {
	if s.Network == "unix" {
		return s.Name + "=unix://" + s.Address
	}
	return s.Name + "=" + s.Network + "://" + s.Address
}

// ParseSocket parses "name=tcp://127.0.0.1:8080" or
// "name=unix:///run/app.sock" (tcp4 and tcp6 too). The name is what the
// program finds in LISTEN_FDNAMES: 1 to 255 printable ASCII characters
// without ':'.
func ParseSocket(s string) (Socket, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return Socket{}, fmt.Errorf("%w: %q: want name=tcp://host:port or name=unix:///path", ErrBadSocket, s)
	}
	if !validName(name) {
		return Socket{}, fmt.Errorf("%w: %q: the name must be 1 to 255 printable ASCII characters without ':'", ErrBadSocket, s)
	}
	network, addr, ok := strings.Cut(rest, "://")
	if !ok || addr == "" {
		return Socket{}, fmt.Errorf("%w: %q: want name=tcp://host:port or name=unix:///path", ErrBadSocket, s)
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return Socket{}, fmt.Errorf("%w: %q: %v", ErrBadSocket, s, err)
		}
	case "unix":
		if !strings.HasPrefix(addr, "/") {
			return Socket{}, fmt.Errorf("%w: %q: a unix socket needs an absolute path (unix:///path)", ErrBadSocket, s)
		}
	default:
		return Socket{}, fmt.Errorf("%w: %q: network %q is not tcp, tcp4, tcp6 or unix", ErrBadSocket, s, network)
	}
	return Socket{Name: name, Network: network, Address: addr}, nil
}

func validName(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// InstanceHost is the host of a probe that targets the new instance alone
// (see [Probe]).
const InstanceHost = "instance"

// ProbeFDName is the LISTEN_FDNAMES name of the private socket an
// instance gets for a probe of [InstanceHost].
const ProbeFDName = "molt-ready"

// Probe tells that an instance is ready without its notifying: an HTTP GET
// answered with a 2xx status, or a TCP connection accepted.
//
// The shared sockets are served by the old instance too during an
// upgrade, so a probe of one of them may be answered by the old instance.
// A probe whose host is "instance" (http://instance/healthz,
// tcp://instance) avoids that: each new instance also gets a private
// listening socket on 127.0.0.1 named "molt-ready" and is probed there,
// which suits programs that serve every socket they are passed (gunicorn
// does).
type Probe struct {
	Kind string // "http" or "tcp"
	Addr string // host:port; "instance" for the private socket
	Path string // the HTTP request's path and query
}

// Private reports whether p probes the instance's private socket.
func (p *Probe) Private() bool { return p != nil && p.Addr == InstanceHost }

// ParseProbe parses "http://host:port/path", "tcp://host:port",
// "http://instance/path" or "tcp://instance".
func ParseProbe(s string) (*Probe, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadProbe, s, err)
	}
	p := &Probe{Kind: u.Scheme, Addr: u.Host, Path: u.RequestURI()}
	switch {
	case u.Scheme != "http" && u.Scheme != "tcp":
		return nil, fmt.Errorf("%w: %q: want http://host:port/path or tcp://host:port", ErrBadProbe, s)
	case u.Host == InstanceHost:
	case u.Port() == "":
		return nil, fmt.Errorf("%w: %q: no port (or use the host %q for the instance's private socket)", ErrBadProbe, s, InstanceHost)
	}
	if p.Kind == "tcp" {
		p.Path = ""
	}
	return p, nil
}

// Options configure a [Supervisor].
type Options struct {
	// Program is the program to run (a path, or a name looked up in
	// PATH) and Args its arguments after argv[0].
	Program string
	Args    []string
	// Env is the program's environment; nil means the supervisor's own.
	// The supervisor removes LISTEN_*, NOTIFY_SOCKET and WATCHDOG_* from
	// it and sets its own.
	Env []string
	// Dir is the program's working directory; empty means the
	// supervisor's.
	Dir string

	// Sockets are the listening sockets to create and pass, in this
	// order (descriptors 3, 4, ...).
	Sockets []Socket
	// Activated passes on the sockets systemd started the supervisor
	// with (LISTEN_FDS, LISTEN_FDNAMES), before Sockets.
	Activated bool

	// Ready is the readiness probe; nil means the program says READY=1
	// on NOTIFY_SOCKET. With a probe, READY=1 is ignored: only the probe
	// decides.
	Ready *Probe
	// Grace bounds the wait for a new instance to be ready. Zero means
	// DefaultGrace (1m).
	Grace time.Duration
	// StopSignal is sent to an old instance after its successor is
	// ready, and to the instance at a stop. Zero means SIGTERM.
	StopSignal syscall.Signal
	// Drain is how long an instance may take to exit after StopSignal
	// before its process group is killed. Zero means DefaultDrain (30s).
	Drain time.Duration

	// Stdin, Stdout and Stderr are the instances' standard streams; nil
	// means the supervisor's.
	Stdin, Stdout, Stderr *os.File

	// Logger receives the supervisor's events. Nil means silent.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.Drain <= 0 {
		o.Drain = DefaultDrain
	}
	if o.StopSignal == 0 {
		o.StopSignal = DefaultStopSignal
	}
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}
