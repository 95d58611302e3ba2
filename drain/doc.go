// Package drain finishes a generation's work after molt handed its sockets
// to a successor, without failing the requests it already accepted.
//
// net/http's own Server.Shutdown is not enough for an upgrade: once it has
// begun, a request read on an already accepted connection is dropped
// without an answer, and idle keep-alive connections are closed at once.
// [HTTPServer] stops accepting (the listening sockets live on in the
// successor, so new connections queue there), answers every request that
// reached this process with "Connection: close", closes connections only
// while they are idle, and calls Shutdown only when none is left.
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
// # What it does not do yet
//
// An idle keep-alive connection is closed while idle: a client sending a
// request on it at that instant sees the connection close. Go's client
// retries idempotent requests in that case; other clients may not.
package drain
