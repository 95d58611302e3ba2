// Package drain finishes a generation's work after molt handed its sockets
// to a successor, without failing a request it accepted.
//
// net/http's own Server.Shutdown is not enough for an upgrade: once it has
// begun, a request read on an already accepted connection is dropped
// without an answer, and idle keep-alive connections are closed while
// clients may be sending on them. [HTTPServer] instead:
//
//   - stops accepting (the listening sockets live on in the successor, so
//     new connections queue there) and waits for its Serve loops, so that
//     no accepted connection escapes its books;
//   - answers every HTTP/1.x request that reached this process, with
//     "Connection: close" once the drain began;
//   - hands each idle HTTP/1.x keep-alive connection to the successor
//     ([molt.HandOver]): whatever its client sends meanwhile waits in the
//     kernel's buffer and is read by the successor, so the client never
//     sees a close;
//   - closes an idle connection that cannot change process (TLS, whose
//     session lives here, or any connection when the service stops for
//     good) only after [Options.IdleGrace] without a request;
//   - waits for hijacked connections (WebSockets) until their handlers
//     close them, and tells long-lived handlers through
//     [HTTPServer.Draining];
//   - finally sends HTTP/2 connections a graceful GOAWAY (net/http's
//     Shutdown, when no HTTP/1.x connection is left to drop), letting
//     their streams complete;
//   - closes whatever is left when the drain's context ends.
//
// # Draining
//
//	srv := drain.NewHTTPServer(&http.Server{Handler: mux})
//	go srv.Serve(ln) // ln from molt's Upgrader
//	upg.Ready()
//	<-upg.Exit()
//	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
//	defer cancel()
//	srv.Drain(ctx)
//	upg.Stop()
//
// NewHTTPServer takes srv over: it sets srv's Handler, ConnState and
// ConnContext, chaining the values they held, and from then on srv is
// served and stopped only through the HTTPServer. Serve returns nil when
// the drain, molt's Upgrader.Stop or a Close of its listener ends it.
// Drain drains once: a later or concurrent call waits for the first and
// returns its result, as [Tracker.Drain] does.
//
// # Limits
//
// An idle TLS keep-alive connection is closed after IdleGrace: a client
// that sends a request at that very instant sees the connection close (Go's
// client retries idempotent requests then; a saturating client never lets
// a connection idle that long). A client that pipelines HTTP/1.1 requests
// is never handed over (its next request may already sit in this process's
// buffer) and is treated like TLS.
package drain
