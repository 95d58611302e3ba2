// Package quic keeps QUIC connections, and the HTTP/3 requests on them,
// alive through a molt upgrade. It is its own module, so that quic-go
// never enters molt's own dependencies.
//
// A QUIC server is more than its UDP socket: each connection lives in the
// process that holds its keys. molt hands the socket to the successor, which
// from then on reads every datagram; without this package it knows none of
// the old generation's connections, and each of them times out or is reset.
// With it:
//
//   - Every connection ID a generation issues carries its generation,
//     encrypted with a key all generations share (one AES block: the
//     generation, a check word and random bytes), so observers cannot
//     correlate two IDs, and a client cannot forge another generation's.
//   - Exactly one generation reads the shared socket: generation 1 from the
//     start, a successor once its Ready has returned. Its parent stops
//     reading just before it sends the ACK, and reads again if it takes the
//     service back (a failed upgrade, a rollback of [molt.Options.Probation]).
//   - The reading generation routes each datagram by its destination
//     connection ID: its own and new connections (the client's first
//     Initial carries an ID of the client's choosing) to its quic-go
//     Transport, those of an older generation that still drains to that
//     generation, over a SOCK_SEQPACKET socket pair whose sending end
//     travels in the inventory. Generation n+2 forwards to n+1 and to n
//     directly. Every generation writes its replies on the shared socket
//     itself, so only the client-to-server direction takes the detour.
//   - The connection-ID key, the stateless-reset key and the token key
//     travel in the inventory too (a memory file on Linux), so an
//     address-validation token a generation issued is valid in the next,
//     and a stateless reset any generation sends is one the client accepts.
//   - [DrainHTTP3] drains an HTTP/3 server in a generation that was
//     upgraded: GOAWAY on every connection, the requests under way finish,
//     each connection closes once the client is done with it.
//
// A service uses it in every generation, before Ready:
//
//	pc, err := moltquic.ListenPacket(upg, "udp", "192.0.2.1:443") // a specific address: see Limits
//	tr := pc.Transport()                 // a *quic.Transport; set more fields before use
//	ln, err := tr.ListenEarly(tlsConf, quicConf)
//	srv := &http3.Server{Handler: h}
//	go srv.ServeListener(ln)
//	upg.Ready()
//	<-upg.Exit()
//	moltquic.DrainHTTP3(ctx, srv, ln)    // ctx bounds the drain
//	tr.Close()
//	pc.Close()
//
// # Limits
//
//   - HTTP/3's GOAWAY: quic-go's [http3.Server.Shutdown] sends one GOAWAY
//     naming the next request it did not start, and rejects requests that
//     were already on their way (H3_REQUEST_REJECTED: never processed, and
//     a client may send them again). RFC 9114 §5.2 lets a server first
//     announce its shutdown with the largest stream ID, which rejects
//     nothing; quic-go cannot send that one. 16 clients in a loop of
//     back-to-back requests saw 1 to 8 rejected requests in 50 upgrades
//     (BENCHMARKS.md); any graceful shutdown of a quic-go server has it.
//   - 0-RTT: a client's Initial and 0-RTT packets carry an ID of its own
//     choosing, so they go to whichever generation reads the socket when
//     they arrive. If the socket changes readers between them, the 0-RTT
//     packets reach a generation that does not know the handshake and are
//     dropped; the client sends that data again once the handshake is done
//     (one round trip later, nothing lost). Resuming a session in another
//     generation at all needs the TLS session ticket keys handed on, for
//     example with [molt.Options.SaveState] and
//     [tls.Config.SetSessionTicketKeys]; without them the client makes a
//     full handshake.
//   - Connection migration: routing is by connection ID, not by address,
//     so a client that moves (a new port, NAT rebinding, a new network)
//     stays with its generation. The address a forwarded datagram came from
//     is passed on without an IPv6 zone.
//   - A draining generation that dies: its end of the socket pair closes,
//     newer generations stop forwarding to it, and its connections'
//     datagrams reach the serving generation, which answers each with a
//     stateless reset (the key is shared), so clients learn at once instead
//     of after their idle timeout.
//   - A full channel (4 MiB, capped by net.core.wmem_max) drops the
//     datagram, as a congested path would; QUIC sends it again.
//   - quic-go's Transport uses the socket through this package, not as a
//     *net.UDPConn, so it runs without its UDP optimisations: no batched
//     reads (recvmmsg), no ECN, no segmentation offload (GSO) on sends,
//     and no IP_PKTINFO. Without IP_PKTINFO, a socket bound to a wildcard
//     address (":443") on a host with several addresses may answer from
//     another address than the client sent to, which breaks the
//     connection: bind each address the service serves.
//   - Exactly one generation reads the socket, except for two short
//     windows: a successor that failed after its parent yielded (it took
//     no ACK) is killed after its parent reads again, and a successor on
//     probation that asks to be rolled back reads until it is killed. A
//     successor that hangs without taking the ACK leaves the socket unread
//     for up to 5 s before it is killed; the kernel buffers what arrives.
//   - Every generation of the service must use this package for the
//     socket; one that does not issues untagged IDs, and its connections
//     are lost at its upgrade, as without it.
//   - Unix only: on Windows, ListenPacket returns [molt.ErrNotSupported].
package quic
