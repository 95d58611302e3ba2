package quic

import (
	"context"
	"errors"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// HandshakeSettle is how long [DrainHTTP3] goes on accepting connections
// before it closes the listener: a handshake this generation began before
// its successor took the socket ends within it (its datagrams are
// forwarded), and the connection is then served and drained like the
// others. A handshake still under way when the listener closes is refused
// (CONNECTION_REFUSED), and that client dials again, reaching the serving
// generation.
const HandshakeSettle = 250 * time.Millisecond

// DrainHTTP3 drains srv, which serves ln, in a generation that was upgraded
// (call it once [molt.Upgrader.Exit] is closed): after [HandshakeSettle]
// it closes ln (http3.Server never closes a listener it was given), then
// sends HTTP/3 GOAWAY on every connection (quic-go's
// [http3.Server.Shutdown]), lets the requests under way finish, and closes
// each connection once the client has finished with it; at ctx's end it
// closes the connections still open. It returns nil, or ctx's error if
// connections had to be closed.
//
// quic-go's GOAWAY names the first request it did not start, and rejects
// the requests that were already on their way (H3_REQUEST_REJECTED, which
// tells the client that nothing was processed): RFC 9114 §5.2 lets a
// server announce its shutdown first with the largest stream ID, which
// rejects nothing, but quic-go has no way to send that. 16 clients in a
// loop of back-to-back requests saw 1 to 8 rejected requests in 50
// upgrades (see BENCHMARKS.md); any graceful shutdown of a quic-go server,
// upgraded or not, has it.
func DrainHTTP3(ctx context.Context, srv *http3.Server, ln http3.QUICListener) error {
	t := time.NewTimer(HandshakeSettle)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	// Closing the listener first: a connection whose handshake ends after
	// the GOAWAY would wait in its queue, never served.
	lerr := ln.Close()
	err := srv.Shutdown(ctx)
	if err == nil && lerr != nil && !errors.Is(lerr, quicgo.ErrServerClosed) {
		err = lerr
	}
	return err
}
