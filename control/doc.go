// Package control lets operators and deploy scripts drive a molt service
// and learn the result: a control socket that answers "upgrade", "stop" and
// "status" (served by [Server], spoken by [Client] and the molt command),
// opt-in signal handling ([HandleSignals]), and status snapshots for
// monitoring ([StatusOf], [Expvar]).
//
// A signal is fire-and-forget. A request on the control socket is answered
// when its result is known: an upgrade request returns the successor's PID
// and generation and the time it took, or why the successor failed (its
// exit status, the timeout, what it reported), while the old generation
// goes on serving.
//
// # The control socket
//
// The socket is a Unix stream socket in the Upgrader's inventory: every
// generation serves the same path, and it is handed over like any
// listener, so no request is refused during an upgrade. Until a successor
// is ready its parent answers (a second upgrade request gets
// [CodeInProgress]); once the successor took over, the parent stops
// accepting and the successor answers. The connections the parent had
// accepted are not closed under their clients: each one waiting for a
// request is handed to the successor with what its client has sent
// meanwhile (molt.HandOver), and answered there; a request the parent had
// begun to read is answered with [CodeReplaced], which [Client] follows
// to the successor, before the connection is handed over. Call
// [Server.Close] before the Upgrader's Stop.
//
//	upg, err := molt.New(molt.Options{Logger: logger})
//	...
//	ctl, err := control.Listen(upg, "/run/svc/control.sock", control.Options{Logger: logger})
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer ctl.Close()
//	stopSignals := control.HandleSignals(upg, control.SignalOptions{Logger: logger})
//	defer stopSignals()
//	ln, err := upg.Listen("tcp", ":8080")
//	...
//	upg.Ready()
//	<-upg.Exit() // after an upgrade, or a stop by request or signal
//	// drain, then exit
//
// # Security
//
// The socket file's mode is 0600 unless [Options.Mode] says otherwise, and
// every connection's peer credentials are checked, whatever the file's
// mode: the kernel reports the connecting process's user and group
// (SO_PEERCRED on Linux, LOCAL_PEERCRED on macOS and FreeBSD). The
// service's own user and root are allowed, and members of [Options.Group]
// if set; anyone else gets [CodePermissionDenied] and the connection is
// closed. Where peer credentials cannot be read, [Listen] fails with
// [ErrNotSupported] rather than serve an unauthenticated socket.
//
// The socket's directory must not let another user swap the file for a
// link to some other file: [Listen] refuses a directory that belongs to a
// user other than root and the service's, or that its group or others may
// write to, unless it is sticky like /tmp. The file gets its mode and
// group as it is created (on Linux, by a bind on a thread with its own
// umask and file-system group), and is never changed by a name that could
// since name something else: an inherited file is changed only through a
// descriptor shown to be the very socket file the chain created (Linux),
// or not at all.
//
// A refused peer is answered and closed by the accept loop before it holds
// anything, and refusals are logged once per user and interval, with a
// count. Each allowed user has 64 connections of its own; a 65th is
// answered with [CodeBusy]. No user's connections take a slot from
// another, so a flood by one user cannot keep another allowed user from
// an upgrade or a stop.
//
// A stale socket file left by a crashed run is replaced; a socket file
// that some process still serves is never removed (the Upgrader checks by
// connecting to it).
//
// # Protocol
//
// Version 1. A client sends requests, each a JSON object on one line, and
// gets one reply per request, a JSON object on one line, in order:
//
//	→ {"v":1,"op":"upgrade"}
//	← {"v":1,"ok":true,"code":"ok","op":"upgrade","pid":4100,"generation":2,
//	   "upgrade":{"ok":true,"pid":4100,"generation":2,"successor_pid":4242,
//	   "started":"2026-11-24T23:50:01.5Z","duration_ns":48211003}}
//
// (one line on the wire). The ops are "upgrade" (answered when the result
// is known), "stop" (answered first; then the service stops) and "status"
// (answered with a [Status]). "v" and "op" are required, each once; a
// request with another key, or a key twice, gets [CodeBadRequest] (a
// later version that adds keys will say so in "v", and a request that two
// JSON readers could read differently is never run).
// [Reply.Code] is the outcome, "ok" or one of the other [Code] values, and
// [Reply.Error] says why in words. A request longer than [MaxRequestSize],
// or that is not such an object, gets an error reply and does not disturb
// the service; after an oversized one the connection is closed. A
// connection idle for 10 seconds is closed.
//
// Any tool that can write a line to a Unix socket can speak it:
//
//	echo '{"v":1,"op":"status"}' | nc -U /run/svc/control.sock
//
// # Signals
//
// [HandleSignals] is opt-in: SIGHUP starts an upgrade, SIGTERM and SIGINT
// stop the service gracefully (the same [molt.Upgrader.Stop] a stop
// request calls), and a second stop signal may force an exit
// ([SignalOptions.Force]). The signals are configurable.
//
// # Observability
//
// The Upgrader logs every lifecycle event to [molt.Options.Logger] and
// delivers them to [molt.Upgrader.Observe]. This package logs with stable
// attribute names: peer_pid, peer_uid, peer_gid (the connecting process),
// op, code, duration, successor_pid, err, path, signal, action, refused
// (the connections a refusal line stands for). [StatusOf]
// turns [molt.Upgrader.Stats] into the protocol's [Status], completed by
// the chain's upgrade history that each generation's [Server] hands to the
// next (an inventory file named "molt/control/history"); [Expvar] publishes
// it with expvar. A Prometheus collector lives in its own module,
// github.com/moltgo/molt/examples/prometheus, so the core depends on no
// metrics library.
//
// # Errors
//
// Client calls return the sentinels of this package wrapped with detail;
// a reply that is not [CodeOK] is an [*Error] carrying its code, which
// unwraps to a sentinel. Compare with [errors.Is] and [errors.As].
//
// # What control does not do
//
// It does not authenticate beyond the peer's user and group, does not
// serve remote clients (put the socket behind your own tooling for that),
// and does not take over a service from an independently started process.
// It does not run on Windows, where [Listen] returns [ErrNotSupported];
// [Client] works wherever Go has Unix sockets.
package control
