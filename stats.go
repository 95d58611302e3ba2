package molt

import (
	"net"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// UpgradeResult describes one upgrade started by this generation.
type UpgradeResult struct {
	Started      time.Time
	Duration     time.Duration // from the Upgrade call until ready or failed
	SuccessorPID int           // 0 if no successor started
	Err          error         // nil if the successor took over
}

// Stats is a snapshot of an Upgrader, for status pages and metrics.
type Stats struct {
	PID        int
	ParentPID  int // 0 in generation 1
	Generation uint64
	State      State
	Started    time.Time // when New was called

	// FailedUpgrades counts the failed upgrades this generation started.
	FailedUpgrades int
	// LastUpgrade is the latest upgrade this generation started; nil if
	// none. The chain's earlier upgrades number Generation-1.
	LastUpgrade *UpgradeResult

	// Inventory lists the entries in inventory order.
	Inventory []EntryStats
}

// EntryStats describes one inventory entry.
type EntryStats struct {
	Kind      string // "listener", "packet-conn", "conn" or "file"
	Network   string // "tcp", "unix", ...; "" for files
	Addr      string // canonical requested address, or the local address of a named socket
	Local     string // the address it is bound to (a ":0" listener's real port); "" if unclaimed
	Name      string // "" for entries made by Listen and ListenPacket
	Inherited bool   // received from the parent generation
	Claimed   bool   // in use by this generation (inherited entries are unclaimed until Listen or a look-up)
}

// Stats returns a snapshot of the Upgrader's state and inventory.
func (u *Upgrader) Stats() Stats {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := Stats{
		PID:            u.pid,
		ParentPID:      u.parentPID,
		Generation:     u.generation,
		State:          u.state,
		Started:        u.started,
		FailedUpgrades: u.failures,
	}
	if u.last != nil {
		last := *u.last
		st.LastUpgrade = &last
	}
	for _, e := range u.entries {
		st.Inventory = append(st.Inventory, EntryStats{
			Kind:      kindName(e.kind),
			Network:   e.network,
			Addr:      e.key,
			Name:      e.name,
			Inherited: e.wasInh,
			Claimed:   e.fd < 0,
			Local:     localAddr(e.live),
		})
	}
	return st
}

func kindName(k handoff.Kind) string {
	switch k {
	case handoff.KindListener:
		return "listener"
	case handoff.KindPacketConn:
		return "packet-conn"
	case handoff.KindConn:
		return "conn"
	case handoff.KindFile:
		return "file"
	}
	return k.String()
}

// localAddr is the bound address of a live socket, "" for anything else.
func localAddr(h liveHandle) string {
	switch h := h.(type) {
	case net.Listener:
		return h.Addr().String()
	case net.PacketConn:
		return h.LocalAddr().String()
	case net.Conn:
		return h.LocalAddr().String()
	}
	return ""
}
