// Package h2count is an HTTP/2 load client that accounts for every stream
// it opens and never sends one twice.
//
// Go's own HTTP/2 client resends a request whose stream the server
// refused by a GOAWAY (a stream above the GOAWAY's last stream id) on
// another connection, without telling its caller: a server that drops
// streams at a shutdown looks perfect through it. This client does no
// such thing, so what a drain loses, it sees. It is built on
// golang.org/x/net/http2's Framer and hpack, and speaks HTTP/2 with prior
// knowledge over TCP (h2c) or HTTP/2 over TLS (ALPN "h2").
//
// # Load
//
// [Run] keeps [Config.Conns] connections open at once and, on each, opens
// streams back to back: at most [Config.Streams] at a time, and never more
// than the server's SETTINGS_MAX_CONCURRENT_STREAMS. Each stream is one
// request ([Config.Method] [Config.Path], with [Config.Body] as DATA if it
// is not empty). A connection opens its first stream only after the
// server's SETTINGS arrived. The client acknowledges SETTINGS and PINGs,
// follows the server's flow-control windows when it sends a body, and
// returns the windows of what it receives with WINDOW_UPDATE.
//
// After a GOAWAY a connection opens no more streams. It waits until the
// streams at or below the GOAWAY's last stream id have ended (each within
// [Config.StreamTimeout]), closes, and its slot dials a new connection.
// The GOAWAY is handled before the frames after it are read, and every
// stream is opened under the same lock that checks for a GOAWAY, so no
// stream follows on the wire the acknowledgement of a PING the server sent
// after its GOAWAY: the two-phase shutdown of RFC 9113 §6.8 can rely on it.
//
// # Counting
//
// A stream is sent once its HEADERS frame was written to the connection.
// Every sent stream ends in exactly one of these ways:
//
//   - answered: a response with a 2xx :status, complete (END_STREAM, on
//     the HEADERS, the last DATA or trailers); 1xx responses are skipped;
//   - failed, with one of the causes below;
//   - aborted at the stop ([Aborted]): still open when the stop's grace
//     ran out. It is counted apart, never as a failure.
//
// The failure causes:
//
//   - [GoAwayAboveLast]: the server sent a GOAWAY whose last stream id is
//     below the stream: the server says it never processed it. The stream
//     fails the moment the GOAWAY is read;
//   - [Reset]: the server reset the stream (RST_STREAM, any code,
//     REFUSED_STREAM included: the client does not retry);
//   - [Status]: a complete response whose status is not 2xx;
//   - [Closed]: the connection ended (end of file, an error, a failed
//     write) while the stream was open;
//   - [Timeout]: no complete response within [Config.StreamTimeout] of
//     the HEADERS; the client resets the stream (CANCEL) and goes on;
//   - [Protocol]: the response broke the protocol: a missing or malformed
//     :status, DATA before the response's HEADERS, invalid header fields,
//     or a connection error detected by the framer (the streams open on
//     that connection fail with this cause).
//
// So, once Run has returned, Sent = Answered + [Counts.Failed] + Aborted.
// A connection that could not be made (dial, TLS handshake, ALPN other
// than "h2", no SETTINGS from the server within [Config.DialTimeout]) is
// counted as [Dial]: no stream was sent on it, so it is no lost stream
// and it is not in Failed. Its slot waits [Config.DialBackoff] and dials
// again. Nothing is ever retried: a failed stream is counted and
// forgotten.
//
// # Stopping
//
// When Run's context ends, no connection opens another stream. The streams
// still open get [Config.StopGrace] to end as they would have (answered,
// or failed with their cause: a server that closes a connection with
// streams open during the grace still fails them as [Closed]). The ones
// still open after the grace are [Aborted]. Then every connection is
// closed, and Run returns once every goroutine it started has ended.
// With [Config.MaxStreams] set, Run also returns once that many streams
// were sent and every one has ended (no grace applies: their own timeouts
// do).
package h2count
