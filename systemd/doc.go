// Package systemd runs a molt service under systemd: `systemctl reload`
// upgrades it and fails when the upgrade failed, `systemctl stop` drains it
// within TimeoutStopSec=, socket activation and the file descriptor store
// provide its sockets, and systemd always knows which process is the
// service.
//
// [Attach] connects a [molt.Upgrader] to systemd. It speaks three
// protocols, one file each, with no dependency beyond golang.org/x/sys:
//
//   - notifications (notify.go, sd_notify(3)): READY=1, RELOADING=1 with
//     MONOTONIC_USEC, MAINPID, STATUS, STOPPING=1, EXTEND_TIMEOUT_USEC (only
//     with [Options.ExtendStopTimeout]), BARRIER=1, over the socket in
//     NOTIFY_SOCKET, a path or an abstract "@name"; and watchdog pings
//     (watchdog.go) when WATCHDOG_USEC and WATCHDOG_PID say so;
//   - socket activation (activation.go, sd_listen_fds(3)): LISTEN_PID,
//     LISTEN_FDS and LISTEN_FDNAMES, checked, removed from the environment,
//     and the sockets given out by name;
//   - the file descriptor store (fdstore.go): FDSTORE=1 and FDSTOREREMOVE=1
//     with FDNAME, so that a crash or `systemctl restart` keeps the
//     listening sockets open.
//
// The reload itself is the molt command's: the unit's ExecReload= runs
// `molt upgrade`, which asks the service on its control socket (package
// control) for an upgrade and exits with the result, and systemd fails the
// reload when it exits non-zero.
//
// # Lifecycle
//
//	// First, before molt.New: SIGHUP's and SIGTERM's default action ends the
//	// process at once (or control.HandleSignals right after molt.New).
//	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
//	upg, err := molt.New(molt.Options{})
//	svc, err := systemd.Attach(upg, systemd.Options{FDStore: true})
//	defer svc.Close()                            // deferred first: runs after upg.Stop
//	defer upg.Stop()
//	ctl, err := control.Listen(upg, os.Getenv("MOLT_SOCKET"), control.Options{})
//	defer ctl.Close()                            // runs first
//	ln, err := svc.Listen("http", "tcp", ":8080") // handed over, passed by systemd, or new
//	go srv.Serve(ln)
//	upg.Ready()                                  // READY=1, MAINPID
//	// ExecReload=molt upgrade (or SIGHUP: upg.Upgrade(ctx)):
//	//   RELOADING=1 ... then MAINPID=<successor> READY=1, or READY=1 STATUS=<why it failed>
//	<-upg.Exit()                                 // or SIGTERM: systemctl stop
//	done := svc.Draining(ctx) // STOPPING=1, unless handed over; ctx below TimeoutStopSec=
//	srv.Drain(ctx)
//	done()
//
// # Hand-over of the main process
//
// systemd tracks one main process per service; when it exits, the service
// is over. An upgrade therefore moves the title to the successor before the
// old process can exit: when the successor is ready, the old process — still
// the main process, still serving — sends MAINPID=<successor>, READY=1 and
// STATUS in one datagram, which NotifyAccess=main accepts because it comes
// from the main process. It then waits for a barrier (BARRIER=1: systemd
// closes a pipe once it processed everything sent before it) and only then
// lets the successor's [molt.Upgrader.Ready] return and itself drain. So
// systemd never sees the main process die before it knows the next one, and
// the successor is the main process from its first own notification on.
//
// The hand-over datagram carries RELOADING=1 and MONOTONIC_USEC as well:
// under Type=notify-reload, READY=1 then ends a reload in whichever state
// systemd is, even one that systemd asked for (SIGHUP) while an upgrade
// triggered otherwise was already running. A failed upgrade ends the same
// way, with READY=1 and the reason in STATUS; under Type=notify, the
// reload ends when `molt upgrade` exits, and fails when it exits 1.
//
// The successor does not send READY=1 itself: its parent did, and from the
// successor — not yet the main process while its parent's datagram may be
// unprocessed — it would be dropped under NotifyAccess=main, or, under
// NotifyAccess=all, would hide a hand-over that did not happen. Every
// generation must therefore use Attach. After the
// hand-over the old process sends nothing at all: no STOPPING=1 when it
// stops, which under NotifyAccess=all would stop the whole service. The
// same holds for the watchdog: each generation pings only while it is the
// main process, and passes WATCHDOG_PID on with its own PID so that its
// successor, which systemd then watches, recognises the variable.
//
// # Unit settings
//
//	[Service]
//	Type=notify              # not notify-reload: see below
//	NotifyAccess=main        # only the current main process is heard
//	KillMode=control-group   # the default: a stop signals draining generations too
//	RuntimeDirectory=%N      # /run/<unit>: the control socket
//	Environment=MOLT_SOCKET=/run/%N/control.sock
//	ExecStart=/usr/local/bin/svc
//	ExecReload=/usr/local/bin/molt --timeout 80s upgrade
//	ExecStop=/bin/sh -c 'kill -TERM "$MAINPID" 2>/dev/null && while kill -0 "$MAINPID" 2>/dev/null; do sleep 0.1; done; exit 0'
//	TimeoutStartSec=90       # also bounds a reload: keep it above molt's --timeout
//	TimeoutStopSec=60        # bounds the whole stop, every generation's drain included
//	TimeoutStopFailureMode=kill
//	WatchdogSec=10           # optional
//	FileDescriptorStoreMax=4 # only with Options.FDStore
//	Restart=on-failure       # optional; with the fd store, restarts refuse no connection
//
// ExecReload= makes `systemctl reload` wait for `molt upgrade`, which
// returns when the successor is ready (the hand-over moved MAINPID by
// then) and exits 1 when the upgrade failed: systemctl reload then exits
// 1 with ReloadResult=exit-code, while the unit stays active on the old
// main process. The service serves the control socket
// ([github.com/moltgo/molt/control.Listen] at $MOLT_SOCKET), and `molt`
// finds it through the same variable. Type=notify-reload is no
// alternative: alone, it cannot fail a reload (a failed upgrade ends with
// READY=1 too, and systemctl reload exits 0); with ExecReload=, systemd
// 254 sends the signal and runs the command, and one reload upgrades
// twice.
//
// NotifyAccess=main is enough, because every notification comes from the
// main process of the moment, and it is the safe choice: a generation that
// handed over cannot change anything any more. KillMode=control-group lets
// a stop reach the generations that still drain; mixed would SIGKILL them
// as soon as the main process exits, and process would leave them behind.
//
// TimeoutStopSec= bounds the stop of every generation: [Service.Draining]
// sends no EXTEND_TIMEOUT_USEC unless [Options.ExtendStopTimeout] asks for
// it. A stop that reaches the timeout is killed and leaves the unit
// "failed" (Result=timeout) with the last STATUS= line, "stopping:
// draining". TimeoutStopFailureMode=kill makes that SIGKILL come when the
// timeout passes; the default (terminate) sends SIGTERM again and waits a
// second TimeoutStopSec=.
//
// ExecStop= is needed at least with systemd 254, as observed by this
// package's tests: a successor is the child of the generation that started
// it, not of systemd, and systemd marks such a main process "not our child"
// and then, on `systemctl stop`, does not wait for it after SIGTERM — it
// sends SIGKILL at once when no other process is left in the unit, cutting
// the drain off. The ExecStop= line sends SIGTERM itself and waits for the
// main process to exit (bounded by TimeoutStopSec=); where systemd waits on
// its own it changes nothing. The journal line "Supervising process … which
// is not our child" after each upgrade is this condition, and expected.
// [Attach] cannot tell whether the line is there: a process sees its
// environment, not its unit file; the repository's tests check the example
// units instead.
//
// Without notifications at all (Type=simple), set [molt.Options.PIDFile]
// and PIDFile= to the same path: molt writes it when a generation becomes
// ready, before the old one exits, and systemd reads it again when its main
// process exits. The examples/systemd directory of the repository holds a
// unit file for each mode, which the real-systemd test runs.
//
// # Sockets
//
// A socket reaches a generation in one of three ways, tried in this order by
// [Service.Listen]: from the previous generation through molt's hand-off
// (successors never receive LISTEN_FDS), from systemd (a .socket unit, or the
// file descriptor store after a restart), or new. Sockets from systemd enter
// the Upgrader's inventory as named files ("systemd/<name>"), so that the next
// generation finds them by name. systemd holds its own copy of each, so the
// socket stays open when this process closes its listener. A listening or
// datagram socket is an ordinary inventory entry, so idle connections can be
// handed over ([molt.HandOver]); a Unix socket with a path is carried as a
// file instead, because its file is systemd's (or must outlive restarts)
// and the Upgrader would remove the file of a socket entry when it stops.
//
// With [Options.FDStore], a generation stores the sockets it created, at
// Ready; systemd ignores a socket it holds already. Names passed by systemd
// or handed over but not claimed are removed from the store. Turning
// FDStore on takes a restart: a successor cannot move the previous
// generation's address-keyed socket under a name.
//
// # Errors
//
// Calls return this package's sentinel errors wrapped with detail;
// compare with [errors.Is]. Bad systemd variables are [ErrInvalidEnv] and
// name the variable; outside systemd, [NewNotifier] fails with
// [ErrNoNotifySocket] while [Attach] succeeds and sends nothing.
//
// # What it does not do
//
// It does not fail `systemctl reload` by itself: no notification can, so
// that is the exit status of `molt upgrade` in ExecReload=. It does not
// read or check the unit file. It does not support Accept=yes sockets,
// vsock notification sockets, or descriptors other than sockets. It runs
// on Linux; on other Unix systems the protocols work where a service
// manager speaks them, and on Windows every call that would need a Unix
// socket returns [ErrNotSupported].
//
// Specifications: sd_notify(3), sd_listen_fds(3), sd_watchdog_enabled(3),
// sd_notify_barrier(3), systemd.service(5) (ExecReload=, Type=notify-reload,
// NotifyAccess=, TimeoutStopFailureMode=, FileDescriptorStoreMax=), systemd.socket(5)
// (FileDescriptorName=); https://systemd.io/FILE_DESCRIPTOR_STORE/.
package systemd
