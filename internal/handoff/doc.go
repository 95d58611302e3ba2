// Package handoff is molt's wire protocol between two generations of a
// service: generation n (the parent) and generation n+1 (the successor it
// started). It runs over one connected Unix stream socket per upgrade.
//
// # Frames
//
// Every message is one frame:
//
//	length  uint32, big endian: the number of bytes that follow (version, type, payload)
//	version uint8:  [Version]; a frame of another version is rejected with a *[VersionError]
//	type    uint8:  one of the [Type] constants
//	payload length-2 bytes, at most [MaxPayload]; empty for READY, ACK, PROBATION,
//	        COMMITTED and STOP
//
// Integers inside payloads are unsigned varints (encoding/binary), strings a
// varint length followed by that many bytes (a STATE data frame is the
// exception: raw bytes). Unknown frame types, short or
// over-long payloads, out-of-range fields and trailing bytes are errors
// wrapping [ErrMalformed]. The pure encoding ([AppendFrame], [ParseHeader] and
// the Marshal/Unmarshal functions) is portable; [Conn], [Pair] and [FromFD]
// need Unix and return [ErrNotSupported] elsewhere.
//
// # Conversation
//
//	parent → child  HELLO      generation of the child, parent PID, number of entries,
//	                           whether STATE follows the inventory
//	parent → child  INVENTORY  a batch of entries; the batch's descriptors travel in the
//	                           SCM_RIGHTS control message of the same sendmsg (one per entry,
//	                           in entry order), at most [MaxFDsPerMessage] per message;
//	                           repeated until all entries announced in HELLO are sent
//	parent → child  STATE      only if HELLO announced it: the application's state, its
//	                           version and size, then its data in frames of up to
//	                           [MaxPayload] bytes (at most [MaxState] in all)
//	child  → parent READY      the child serves; or
//	child  → parent FAILED     reason: the child gives up (its init failed, it stopped, or it
//	                           cannot speak this protocol version)
//	parent → child  PREDECESSORS  the older generations still running (pid, start time,
//	                           generation each), only if there are any
//	parent → child  PROBATION  only with a probation: the ACK that follows starts it
//	parent → child  ACK        the parent stops accepting: the child serves now
//	parent → child  CONN       an idle connection to serve, with its descriptor (while draining)
//
// With a probation the parent keeps its sockets, and takes the service back
// if the child dies before the probation ends; meanwhile:
//
//	child  → parent FAILED     reason: the child asks to be replaced by its parent again
//	child  → parent STOP       the child stops on purpose: the parent must not take over again
//	parent → child  COMMITTED  the probation passed; the parent drains
//
// A takeover (a process the parent did not start connects to the parent's
// takeover socket) begins with one more frame, then goes on as above:
//
//	child  → parent TAKEOVER   the child asks to take over; the parent answers with HELLO,
//	                           or FAILED with the reason it refuses
//
// The parent keeps its end open until it stops, so end-of-file on the child's
// side means "the parent is gone".
//
// Descriptors are received with MSG_CMSG_CLOEXEC where the system has it and
// marked close-on-exec at once elsewhere, a truncated control message
// (MSG_CTRUNC) is an error, descriptors must arrive with the frame they
// belong to (exactly one per entry of an INVENTORY frame, none with any other
// frame), and every descriptor that did arrive is closed on any error path.
package handoff
