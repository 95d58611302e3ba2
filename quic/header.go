package quic

// destConnID returns the destination connection ID of the QUIC packet
// that starts datagram b (RFC 9000 §17: packets coalesced into one
// datagram share it), or nil if b is too short to hold one. A long header
// says how long its ID is; a short header does not, and every ID this
// package issues is ConnIDLen long.
func destConnID(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	if b[0]&0x80 == 0 { // short header: flags, then the ID
		if len(b) < 1+ConnIDLen {
			return nil
		}
		return b[1 : 1+ConnIDLen]
	}
	// long header: flags, version (4 bytes), ID length, ID
	if len(b) < 6 {
		return nil
	}
	n := int(b[5])
	if len(b) < 6+n {
		return nil
	}
	return b[6 : 6+n]
}
