package quic

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/reserved"
	quicgo "github.com/quic-go/quic-go"
)

// keysName is the inventory entry that carries the keys from generation
// to generation: an anonymous file (a memfd on Linux) that never reaches
// a disk on Linux, and is unlinked at once elsewhere.
const keysName = "molt/quic/keys"

// keysMagic starts the key file, and names its layout.
const keysMagic = "molt-quic-keys/1\n"

// keys are what every generation of a service shares: connection IDs
// one generation issued are readable by the next, a stateless reset
// another generation sends is valid for the client, and so are the
// address-validation tokens.
type keys struct {
	connID    [16]byte // AES-128, for the connection IDs (cid.go)
	reset     quicgo.StatelessResetKey
	tokenGen  quicgo.TokenGeneratorKey
	inherited bool // read from the previous generation's file
}

func (k *keys) marshal() []byte {
	b := make([]byte, 0, len(keysMagic)+len(k.connID)+len(k.reset)+len(k.tokenGen))
	b = append(b, keysMagic...)
	b = append(b, k.connID[:]...)
	b = append(b, k.reset[:]...)
	return append(b, k.tokenGen[:]...)
}

func (k *keys) unmarshal(b []byte) error {
	want := len(keysMagic) + len(k.connID) + len(k.reset) + len(k.tokenGen)
	if len(b) != want || !bytes.HasPrefix(b, []byte(keysMagic)) {
		return fmt.Errorf("molt/quic: inherited key file is not one this version reads (%d bytes)", len(b))
	}
	b = b[len(keysMagic):]
	b = b[copy(k.connID[:], b):]
	b = b[copy(k.reset[:], b):]
	copy(k.tokenGen[:], b)
	return nil
}

// loadKeys returns the keys of u's service: inherited, or made once by
// the first generation (and by then in its inventory).
func loadKeys(u *molt.Upgrader) (*keys, error) {
	f, err := u.File(keysName)
	switch {
	case err == nil:
		return readKeys(f)
	case !errors.Is(err, molt.ErrNotFound):
		return nil, fmt.Errorf("molt/quic: keys: %w", err)
	}
	k := new(keys)
	for _, b := range [][]byte{k.connID[:], k.reset[:], k.tokenGen[:]} {
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
	}
	f, err = keyFile(k.marshal())
	if err != nil {
		return nil, fmt.Errorf("molt/quic: keys: %w", err)
	}
	if err := reserved.AddFile(u, keysName, f); err != nil {
		f.Close()
		if errors.Is(err, molt.ErrNameInUse) { // another ListenPacket of this generation made it meanwhile
			return loadKeys(u)
		}
		return nil, fmt.Errorf("molt/quic: keys: %w", err)
	}
	return k, nil
}

func readKeys(f *os.File) (*keys, error) {
	b := make([]byte, 256)
	n, err := f.ReadAt(b, 0) // at an offset: the file's position is shared with other generations
	if n == 0 && err != nil {
		return nil, fmt.Errorf("molt/quic: reading the inherited keys: %w", err)
	}
	k := &keys{inherited: true}
	if err := k.unmarshal(b[:n]); err != nil {
		return nil, err
	}
	return k, nil
}
