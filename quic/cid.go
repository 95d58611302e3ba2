package quic

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"

	quicgo "github.com/quic-go/quic-go"
)

// ConnIDLen is the length of the connection IDs every generation issues.
// It is fixed (a short-header packet does not say how long its connection
// ID is), so the generations of one service must agree on it.
const ConnIDLen = 16

// A connection ID is one AES block: the generation that issued it and a
// check word, both encrypted with the key the generations share, around
// eight random bytes. Observers see 16 unrelated bytes per ID (what quic-go
// asks of a ConnectionIDGenerator), and a client without the key cannot make
// an ID that another generation would take as its own, except by chance
// (the check word: 1 in 2^32).
//
//	plaintext: generation (4 bytes, big endian) | check (4 bytes, zero) | random (8 bytes)
type idCipher struct{ block cipher.Block }

func newIDCipher(key []byte) (*idCipher, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("molt/quic: connection ID key: %w", err)
	}
	return &idCipher{b}, nil
}

// seal returns a new connection ID tagged with generation gen.
func (c *idCipher) seal(gen uint32) ([ConnIDLen]byte, error) {
	var plain, id [ConnIDLen]byte
	binary.BigEndian.PutUint32(plain[0:4], gen)
	if _, err := rand.Read(plain[8:]); err != nil {
		return id, err
	}
	c.block.Encrypt(id[:], plain[:])
	return id, nil
}

// open returns the generation that issued id, and false for an ID that no
// generation issued (a client's own choice, for its first Initial).
func (c *idCipher) open(id []byte) (uint32, bool) {
	if len(id) != ConnIDLen {
		return 0, false
	}
	var plain [ConnIDLen]byte
	c.block.Decrypt(plain[:], id)
	if binary.BigEndian.Uint32(plain[4:8]) != 0 {
		return 0, false
	}
	return binary.BigEndian.Uint32(plain[0:4]), true
}

// idGenerator is the quic.ConnectionIDGenerator of one generation.
type idGenerator struct {
	c   *idCipher
	gen uint32
}

var _ quicgo.ConnectionIDGenerator = (*idGenerator)(nil)

func (g *idGenerator) GenerateConnectionID() (quicgo.ConnectionID, error) {
	id, err := g.c.seal(g.gen)
	if err != nil {
		return quicgo.ConnectionID{}, err
	}
	return quicgo.ConnectionIDFromBytes(id[:]), nil
}

func (g *idGenerator) ConnectionIDLen() int { return ConnIDLen }
