// Package molt replaces a running network service with a new process — a
// new binary, a new configuration — without refusing, resetting or failing
// a connection.
//
// The running process (generation n) starts its successor (generation
// n+1) from the executable as it is on disk now, hands it its listening
// sockets over a private Unix socket, and gives it a grace period to
// initialise. Only when the successor says it is ready does generation n
// stop accepting and drain; the kernel's accept queues were never closed,
// so no client notices. A successor that crashes, hangs or gives up is
// killed and reaped, and generation n goes on serving as if nothing had
// happened, with the reason in hand.
//
// # Words
//
// A generation is one process of the chain; the one that starts the next
// is its parent, the one it starts is its successor. The hand-off is what
// happens at an upgrade: the parent sends the successor its inventory over
// a private socketpair (HELLO, INVENTORY batches; the successor answers
// READY or FAILED; the parent's ACK commits). A hand-over is later and
// smaller: a draining parent passes one idle accepted connection to the
// successor that took over ([HandOver]).
//
// # Lifecycle
//
// The compiled skeleton of a service is the package's Example. In short:
//
//	upg, err := molt.New(molt.Options{})      // starts receiving the parent's sockets, if any
//	ln, err := upg.Listen("tcp", ":8080")     // inherited, or new in generation 1
//	go server.Serve(ln)
//	upg.Ready()                               // the parent may stop now
//	// on SIGHUP, a deploy script, ...:
//	err = upg.Upgrade(ctx)                    // nil: a successor serves; else why not
//	<-upg.Exit()                              // closed after a successful upgrade
//	// drain (package drain), then
//	upg.Stop()
//
// [Upgrader.State] follows this table; each arrow is one [EventKind],
// delivered to [Upgrader.Observe]rs, and nothing else changes the state:
//
//	starting ──Ready──▶ ready ──Upgrade──▶ upgrading ──successor took the ACK──▶ draining
//	   │                  ▲                    │                                    │
//	   │                  └──────failed────────┘                                    │
//	   └──────────────────┴──────Stop──▶ stopping ──▶ stopped ◀────────Stop──────────┘
//
// (EventReady, EventUpgradeStarted, EventUpgradeFailed, EventUpgraded,
// EventStopping, EventStopped.) Stop during an upgrade first ends the
// upgrade (upgrading → ready, or → draining if the successor had already
// been committed), then stops. [Upgrader.Exit] is closed on entering
// draining ([Upgraded]) or stopping ([Stopped]). What must be done after
// the successor said READY and before it is told it took over — tell
// systemd the new main PID, say — is an [Upgrader.OnCommit] hook.
//
// # The contract
//
//   - Every listening socket keeps accepting during an upgrade.
//   - Exactly one upgrade runs at a time, from the call until its successor
//     is ready or reaped; others get [ErrUpgradeInProgress].
//   - A failed upgrade leaves this generation serving and returns a
//     [*ChildError]: exit status or signal, [ErrReadyTimeout], the reason
//     the successor reported, a hand-off error, or ctx's error.
//   - Nothing crosses generations but the inventory (and the state the
//     application hands on, see below): molt's environment
//     marker is removed before [New] returns and every inherited
//     descriptor arrives close-on-exec, so processes a service starts
//     inherit nothing.
//   - Unix socket files are removed by the generation that serves them
//     when it closes them or stops, never while another generation may
//     serve them.
//
// # Upgrade safety
//
// These options make an upgrade safer than a bare hand-off:
//
//   - [Options.Check], the pre-flight check: the new binary runs once in
//     check mode before anything is handed over, and a failing check
//     fails the upgrade at [StageCheck] with its output
//     ([Upgrader.Check] runs it alone).
//   - [Options.Probation]: after the ACK this generation stops accepting
//     but keeps its sockets and its connections, and takes the service
//     back if the successor dies or calls [Upgrader.RollBack] within the
//     window ([ErrRolledBack]); only then does it commit and drain.
//     Connections the successor had accepted are lost with it; those
//     still queued are served by this generation.
//   - [Upgrader.UpgradeIfGeneration] upgrades only a named generation,
//     so that two deploy tools cannot stack upgrades.
//   - [Options.MaxDraining] refuses an upgrade while that many older
//     generations still drain ([ErrTooManyDraining]), and
//     [Options.DrainTimeout] ends a generation that drains too long.
//   - [Options.SaveState] carries application state (see State below).
//   - [Options.TakeoverSocket] and [Options.TakeoverFrom] let a process
//     that someone else started (another unit, a container, an
//     operator) take over with the same protocol and guarantees.
//
// # Inventory
//
// The sockets and files that outlive a generation: listeners
// ([Upgrader.Listen]), packet sockets ([Upgrader.ListenPacket]), and, under
// names, listeners, packet sockets, connections and files added by hand
// ([Upgrader.AddListener] and its siblings, claimed by the next generation
// with [Upgrader.Listener] and its siblings). Addresses are compared as the
// kernel binds them (":8080", "0.0.0.0:8080" and "[::]:8080" are one TCP
// socket), and a ":0" listener keeps its port. Closing a handle releases
// its entry.
//
// # Connections
//
// After a successful upgrade the old generation may pass idle accepted
// connections to the successor with [HandOver] (package drain does this
// for net/http, package control for its own socket): the successor's
// listener returns them from Accept, with whatever the client sent
// meanwhile still in the kernel's buffer, so the client never sees its
// keep-alive connection close. molt knows no protocol: the server marks
// the idle point ([Idle]) and names its read buffer's size, and must
// never hand over a connection whose state lives in the process (TLS).
//
// # State
//
// A generation may hand its successor one blob of application state —
// counters, TLS session-ticket keys, a small cache — in memory, never
// through a file: [Options.SaveState] returns it, with a version string,
// at every upgrade before the successor starts, and the successor reads
// it before Ready with [Upgrader.InheritedState], which checks the
// version. It is at most [MaxStateSize] bytes; a larger one fails the
// upgrade ([ErrStateTooLarge]) before any successor started. A successor
// in generation 1, or whose parent saved none, gets [ErrNoState]; one
// that reads another version gets [ErrStateVersion]; either starts
// fresh.
//
// # Environment
//
// molt uses one environment variable, MOLT_HANDOFF_FD, which a parent sets
// for its successor and [New] removes, and a second one for the
// pre-flight check: a process started with MOLT_CHECK=1 runs
// [Options.Check] in [New] and exits, and MOLT_TAKEOVER_FROM (with
// MOLT_TAKEOVER_REPORT, from `molt takeover`) makes [New] take over; New
// removes both. Successors do not receive systemd's
// LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES, nor MOLT_CHECK; checks do not
// receive NOTIFY_SOCKET.
//
// # Errors
//
// Methods return the sentinel errors of this package, wrapped with detail;
// compare with [errors.Is]. Failures of a successor are [*ChildError]
// values, whose Err is an [*os/exec.ExitError], [ErrReadyTimeout], a
// [*ReportedError], [ErrStopped] or a context or I/O error; use
// [errors.As].
//
// # What molt does not do
//
// molt does not drain your server by itself: package drain does that for
// net/http (and counts connections for other servers), and the pattern
// above shows where your own drain goes. It does not
// supervise: a successor that crashes after it became ready is not
// restarted (systemd's Restart= is); with [Options.Probation] its parent
// takes the service back if that happens within the window. It does not run on Windows, where
// [New] returns [ErrNotSupported]. Each successor runs in a process group
// of its own (so a failed one is killed with everything it started), which
// means a terminal's Ctrl-C reaches only the first generation: stop a
// chain with a signal to the serving process, or run it under systemd.
package molt
