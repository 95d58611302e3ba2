//go:build unix

package molt_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"sync/atomic"

	"github.com/moltgo/molt"
)

// A service hands its request counter and its TLS session-ticket key to
// the next generation, in memory: the counter does not reset at an
// upgrade, and clients resume their TLS sessions with the new process.
// The version names the state's format; a successor that does not know
// it starts fresh.
func ExampleUpgrader_InheritedState() {
	type state struct {
		Requests  int64
		TicketKey [32]byte
	}
	const stateVersion = "example/v1"
	var (
		requests  atomic.Int64
		ticketKey [32]byte
	)
	upg, err := molt.New(molt.Options{
		// Called at every upgrade, before the successor starts.
		SaveState: func(ctx context.Context) (string, []byte, error) {
			b, err := json.Marshal(state{Requests: requests.Load(), TicketKey: ticketKey})
			return stateVersion, b, err
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	// Before Ready: the state arrives with the inventory.
	var st state
	data, err := upg.InheritedState(stateVersion)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &st); err != nil {
			log.Fatal(err)
		}
		fmt.Println("carrying on after", st.Requests, "requests")
	case errors.Is(err, molt.ErrNoState), errors.Is(err, molt.ErrStateVersion):
		fmt.Println("starting fresh:", err)
		rand.Read(st.TicketKey[:])
	default:
		log.Fatal(err) // the hand-off failed; the parent serves on
	}
	requests.Store(st.Requests)
	ticketKey = st.TicketKey

	tlsConf := &tls.Config{ /* Certificates: ... */ }
	tlsConf.SetSessionTicketKeys([][32]byte{ticketKey})
	// ... listen, serve with tlsConf, count requests ...

	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	// Output: starting fresh: molt: no inherited state: generation 1 has no parent
}
