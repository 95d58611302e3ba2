package molt

import (
	"context"
	"log/slog"
	"net"
	"os/exec"
	"time"
)

// DefaultReadyTimeout is the time a successor gets to call Ready when
// [Options.ReadyTimeout] is zero.
const DefaultReadyTimeout = time.Minute

// Options configure an [Upgrader]. The zero value is ready to use; every field
// documents what its zero value means.
type Options struct {
	// ReadyTimeout bounds an upgrade: the successor must call Ready within
	// this time of being started, or it is killed with its process group
	// and the upgrade fails with [ErrReadyTimeout]. It also bounds how long
	// [New] waits for the inventory from the parent. Zero means
	// [DefaultReadyTimeout].
	ReadyTimeout time.Duration

	// PIDFile, if set, is written with this process's ID when it becomes
	// ready (atomically: a temporary file in the same directory, then
	// rename), and rewritten by a parent whose upgrade failed. Empty means
	// no PID file.
	PIDFile string

	// Logger receives lifecycle events. Nil means silent.
	Logger *slog.Logger

	// ListenConfig is used by [Upgrader.Listen] and [Upgrader.ListenPacket]
	// to create sockets that were not inherited (for socket options, use
	// its Control field). Nil means the zero net.ListenConfig.
	ListenConfig *net.ListenConfig

	// Command, if set, is called for every upgrade with the successor's
	// command before it starts, and may change it: Path (the executable,
	// resolved at upgrade time), Args, Dir, Env, Stdin/Stdout/Stderr,
	// SysProcAttr, ExtraFiles. It must not start the command. After it
	// returns, molt appends its hand-off descriptor to ExtraFiles and its
	// marker to Env. An error fails the upgrade (stage start). Nil means
	// the same executable path, arguments, working directory and
	// environment as this process, with its standard streams.
	Command func(cmd *exec.Cmd) error

	// Check is the service's pre-flight check: what nginx -t is to
	// nginx. It should load and validate what the service needs to
	// start (configuration, certificates, ...) without serving, and
	// return an error that says what is wrong. It runs in a process of
	// its own: when a binary is started with molt's check marker in its
	// environment (MOLT_CHECK=1, which [Upgrader.Check] sets, and which
	// an operator may set by hand), its New runs Check with a context
	// bounded by ReadyTimeout and exits the process: status 0 if Check
	// returned nil, 1 with the error on standard error otherwise. A
	// binary whose Check is nil exits 0 in check mode.
	//
	// Check also opts this process in: when it is set, every Upgrade
	// first runs the new binary's check (see [Upgrader.Check]), and a
	// failing check fails the upgrade at [StageCheck] before a successor
	// is started. Nil means no check: a binary started with the marker
	// exits 0, and Upgrade starts the successor directly.
	Check func(ctx context.Context) error

	// TakeoverSocket, if set, is the path of a Unix socket on which this
	// generation, once ready, accepts takeovers: a process that someone
	// else started (another systemd unit, a container that shares the
	// network namespace and this directory, an operator) and that was
	// given this path as its [Options.TakeoverFrom] takes over the
	// service with the same protocol, checks and guarantees as a
	// successor Upgrade starts (without the pre-flight check: the taker
	// runs already). Only this process's user, root and members of
	// TakeoverGroup may; the socket file is created with mode 0600 (0660
	// with a group). The socket follows the generations like a listener
	// of the inventory. Empty means no takeovers.
	TakeoverSocket string

	// TakeoverGroup, a group name or ID, lets its members take over too
	// (see TakeoverSocket). Empty means only the user and root.
	TakeoverGroup string

	// TakeoverFrom, if set, makes New take over from the generation that
	// serves the takeover socket at this path (its
	// [Options.TakeoverSocket]) instead of starting as generation 1; the
	// environment variable MOLT_TAKEOVER_FROM does the same, and New
	// removes it. If nothing serves the path (no socket file, or nobody
	// accepting), New starts as generation 1, so one configuration
	// serves the first start and every later takeover. The serving
	// generation must run as this process's user or root. A refusal, or a
	// failure before the ACK, is New's or Ready's error; the serving
	// generation then serves on. A process started by a previous
	// generation ignores TakeoverFrom.
	TakeoverFrom string

	// Probation, if positive, keeps this generation able to take the
	// service back for that long after its successor took over. Once the
	// successor has taken the ACK (its Ready returned), this generation
	// stops accepting but keeps its sockets open, goes on serving the
	// connections it has, and does not drain yet: Upgrade is still
	// running and Exit stays open. If the successor dies (it exits or is
	// killed) or calls [Upgrader.RollBack] within the probation, this
	// generation accepts again at once on the same sockets (connections
	// that were waiting in their queues are not lost), kills the
	// successor with its process group, rewrites [Options.PIDFile], and
	// Upgrade returns a [*ChildError] at [StageProbation] that matches
	// [ErrRolledBack]; what the successor had accepted is lost with it.
	// If the successor survives, or stops on purpose ([Upgrader.Stop]),
	// the commit hooks run (so, under systemd, the main PID moves only
	// then), the successor is told, and Upgrade returns nil: drain and
	// exit as without a probation. Meanwhile the successor cannot start an
	// upgrade of its own ([ErrUpgradeInProgress]). Zero means no
	// probation: the successor is on its own once it took the ACK, and
	// this generation drains at once. It is off by default because it
	// keeps this generation's code and memory for the window and makes
	// Upgrade (and a reload) last that much longer; a few seconds catch a
	// successor that crashes on its first requests.
	Probation time.Duration

	// SaveState, if set, is called once in every upgrade, before the
	// successor starts, for the state this generation hands on in memory:
	// data (at most [MaxStateSize] bytes) under a version the application
	// names (at most [MaxStateVersionLen] bytes), which the successor
	// reads with [Upgrader.InheritedState] and checks. ctx ends at the
	// upgrade's deadline ([Options.ReadyTimeout]) or when the upgrade is
	// interrupted; the time SaveState takes counts against the successor's
	// ReadyTimeout. An error, or a state over the limits
	// ([ErrStateTooLarge]), fails the upgrade before any successor
	// started ([StageStart]), and this generation serves on. molt does not
	// modify data and drops it when the upgrade ends; this generation goes
	// on serving meanwhile, so what changes after SaveState returned is
	// not in the state. The state is sent after the inventory, over the
	// hand-off channel only: nothing is written to disk. A successor built
	// with a molt that predates the state fails its New and the upgrade
	// ([*ReportedError]). Nil means no state: InheritedState returns
	// [ErrNoState].
	SaveState func(ctx context.Context) (version string, data []byte, err error)

	// MaxDraining bounds how many older generations may still be running
	// (draining) when an upgrade starts: with that many, Upgrade refuses
	// at once with [ErrTooManyDraining], naming their PIDs, before it
	// starts anything, and this generation serves on. It guards against a
	// reload storm — a deploy loop, a flapping config watcher — piling up
	// old processes, each with its memory and connections. Zero means
	// [DefaultMaxDraining] (2: a second deploy may follow the first while
	// its old generation still drains, a third waits); a negative value
	// means no limit. This generation's parent counts while it runs, and
	// so do the older generations it reported still running.
	//
	// Above 2, or without a limit, more than two generations drain, and
	// an idle connection an old generation hands over travels down that
	// chain to the serving generation. A draining generation whose own
	// successor has already exited could pass nothing on; it stops
	// reading its parent's channel then, so that on Linux the parent's
	// [HandOver] fails with [ErrNoSuccessor] and the parent keeps the
	// connection (package drain answers its next request with
	// "Connection: close"). Only a connection already on its way down when
	// the successor exits is lost (and, where a socket shut for reading
	// does not refuse what its peer sends, every later one).
	MaxDraining int

	// DrainTimeout, if positive, ends this process that long after a
	// successful upgrade (after [Upgrader.Exit] was closed with reason
	// [Upgraded]) if it is still running: molt logs an error and exits
	// with status [DrainTimeoutExitCode], without running deferred
	// functions, wherever the drain is. It never fires before the upgrade
	// is committed (with [Options.Probation], after the probation), nor
	// after a Stop that was not preceded by an upgrade; Stop does not
	// disarm it. Zero means no cap: the application's drain decides how
	// long this generation lingers, as long-lived connections (WebSockets,
	// streams) may need; [Options.MaxDraining] then still keeps lingering
	// generations from piling up.
	DrainTimeout time.Duration
}

func (o *Options) readyTimeout() time.Duration {
	if o.ReadyTimeout > 0 {
		return o.ReadyTimeout
	}
	return DefaultReadyTimeout
}
