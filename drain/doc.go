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
//   - shuts HTTP/2 connections down in two phases (RFC 9113 §6.8), so that
//     no stream a client has sent goes unanswered: see "HTTP/2" below;
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
// # HTTP/2
//
// A client may open a stream at any moment, so streams are always on
// their way to the server. net/http's Shutdown sends one GOAWAY naming the
// last stream the server has read; a stream still on the wire is above it
// and is never processed, and a client that does not resend it (most
// outside Go) gets no answer. The drain first sends every HTTP/2
// connection a GOAWAY that refuses nothing (last stream id 2^31-1,
// NO_ERROR), which tells the client to open no more streams there, and a
// PING. Streams the client opened before it read that GOAWAY are ahead of
// the PING's ACK on the wire, and net/http's server reads frames one at a
// time, each handled before the next is read: once the ACK is read, the
// server knows every stream the client will send. Only then does
// net/http's Shutdown send its final GOAWAY. A client that acknowledges no
// PING after a GOAWAY (nghttp2's) is given [Options.GoAwayTimeout] (1 s by
// default) instead. Responses to HTTP/2 requests never carry
// "Connection: close": net/http's HTTP/2 server takes it as a cue to send
// its final GOAWAY at once.
//
// The mechanism, chosen after reading net/http's HTTP/2 server: the drain
// wraps the two entries net/http registers in srv.TLSNextProto ("h2", and
// "unencrypted_http2" for h2c, see [http.Protocols]), so that each HTTP/2
// connection reaches net/http's server through a net.Conn of the drain's.
// That conn follows the server's outgoing frames and adds the GOAWAY and
// PING only at a frame boundary outside a header block, so no frame of the
// server's is split or reordered; it follows the incoming frames to see
// the ACK (net/http ignores the ACK of a PING it did not send). For TLS it
// sits on the plaintext side: the drain reads the client preface from the
// *tls.Conn and hands the connection to the server's unencrypted entry,
// wrapped in a conn that reports the TLS state, so the server applies its
// TLS checks and Request.TLS is set as usual. This needs the HTTP/2 server
// bundled in net/http, or golang.org/x/net/http2's ConfigureServer (which
// registers the same two entries); h2c through golang.org/x/net/http2/h2c's
// handler hijacks the connection and is drained like any hijacked one,
// with net/http's single GOAWAY: use http.Protocols' UnencryptedHTTP2.
//
// # Limits
//
// An idle TLS keep-alive connection is closed after IdleGrace: a client
// that sends a request at that very instant sees the connection close (Go's
// client retries idempotent requests then; a saturating client never lets
// a connection idle that long). A client that pipelines HTTP/1.1 requests
// is never handed over (its next request may already sit in this process's
// buffer) and is treated like TLS. With molt's Options.MaxDraining above 2
// (or no limit), a connection handed over travels down a chain of
// draining generations; one handed over just as a generation down that
// chain loses its successor is closed (see MaxDraining). Once it has, the
// hand-over fails and the connection is drained here, like TLS.
//
// Go's HTTP/2 client fails a request whose body it cannot rewind (a
// Request without GetBody: http.NewRequest sets it only for a
// *bytes.Buffer, *bytes.Reader or *strings.Reader) when the request takes
// a connection from the pool just as that connection's GOAWAY arrives:
// the client finds the connection unusable, closes the body without
// having sent anything, and then cannot resend it ("net/http: cannot
// rewind body after connection loss"). Any GOAWAY, from any server, opens
// that window; measured here, 30 drains under 32 such clients failed 0-27
// requests per drain, and every failed request was one the server never
// saw. Set GetBody. A related window is open in theory, not seen in these
// runs: the client numbers a stream before it reads the first GOAWAY but
// writes its HEADERS after the PING's ACK, so the final GOAWAY refuses it.
package drain
