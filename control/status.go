package control

import (
	"encoding/json"
	"errors"
	"expvar"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/reserved"
)

// StatusOf returns a snapshot of upg for status pages: [molt.Upgrader.Stats]
// in the protocol's form, completed with the chain's upgrade history when a
// [Server] of this or an earlier generation kept one. It may be called at
// any time and from any goroutine.
func StatusOf(upg *molt.Upgrader) Status {
	st := upg.Stats()
	now := time.Now()
	s := Status{
		PID:            st.PID,
		ParentPID:      st.ParentPID,
		Generation:     st.Generation,
		State:          st.State.String(),
		Started:        st.Started,
		Uptime:         now.Sub(st.Started),
		Upgrades:       st.Generation - 1,
		FailedUpgrades: st.FailedUpgrades,
		Listeners:      []Listener{},
		Draining:       st.Draining,
	}
	if last := st.LastUpgrade; last != nil {
		r := UpgradeResult{
			OK:           last.Err == nil,
			PID:          st.PID,
			Generation:   st.Generation,
			SuccessorPID: last.SuccessorPID,
			Started:      last.Started,
			Duration:     last.Duration,
		}
		if last.Err != nil {
			describeFailure(&r, last.Err)
		}
		s.LastUpgrade = &r
	}
	var control string
	if h, ok := readHistory(upg); ok {
		s.FailedUpgrades = max(s.FailedUpgrades, h.Failed)
		if h.Last != nil && (s.LastUpgrade == nil || !h.Last.Started.Before(s.LastUpgrade.Started)) {
			s.LastUpgrade = h.Last
		}
		control = h.Control
	}
	for _, e := range st.Inventory {
		if e.Kind != "listener" && e.Kind != "packet-conn" {
			continue
		}
		addr := e.Addr
		if e.Local != "" && e.Network != "unix" && e.Network != "unixpacket" && e.Network != "unixgram" {
			addr = e.Local // a ":0" listener's real port
		}
		s.Listeners = append(s.Listeners, Listener{
			Kind:      string(e.Kind),
			Network:   e.Network,
			Address:   addr,
			Name:      e.Name,
			Inherited: e.Inherited,
			Control:   control != "" && e.Network == "unix" && e.Addr == control,
		})
	}
	return s
}

// Expvar returns an expvar.Var whose value is [StatusOf](upg), for
//
//	expvar.Publish("molt", control.Expvar(upg))
//
// expvar's names are process-wide and cannot be published twice, which is
// why this package publishes nothing itself.
func Expvar(upg *molt.Upgrader) expvar.Var {
	return expvar.Func(func() any { return StatusOf(upg) })
}

// describeFailure fills r's failure fields from the error of an upgrade.
func describeFailure(r *UpgradeResult, err error) {
	r.OK = false
	r.Error = err.Error()
	r.Reason = err.Error()
	var ce *molt.ChildError
	if !errors.As(err, &ce) {
		return
	}
	if r.SuccessorPID == 0 {
		r.SuccessorPID = ce.PID
	}
	r.Stage = ce.Stage.String()
	if ce.Err != nil {
		r.Reason = ce.Err.Error()
	}
	if chk := (*molt.CheckError)(nil); errors.As(err, &chk) {
		// The output is the explanation; the reason is how it ended.
		r.Output, r.Reason = chk.Output, chk.Err.Error()
	}
	if ce.State != nil {
		r.ExitStatus = ce.State.String()
		if ce.State.Exited() {
			code := ce.State.ExitCode()
			r.ExitCode = &code
		}
	}
}

// resultOfEvent describes the upgrade that ended with e.
func resultOfEvent(e molt.Event) UpgradeResult {
	r := UpgradeResult{
		OK:           e.Kind == molt.EventUpgraded,
		PID:          e.PID,
		Generation:   e.Generation,
		SuccessorPID: e.SuccessorPID,
		Started:      e.Time.Add(-e.Duration),
		Duration:     e.Duration,
	}
	if e.Err != nil {
		describeFailure(&r, e.Err)
	}
	return r
}

// The upgrade history of a chain lives in a small file of the inventory,
// so each generation hands it to the next: the core's Stats describe only
// the upgrades this generation started, but an operator asking a
// successor wants the upgrade that started it. The generation that runs an
// upgrade writes the result (in its observer, before the successor's Ready
// returns); any generation reads it.
const historyName = "molt/control/history"

// maxHistory bounds the record read back.
const maxHistory = 64 << 10

// historyRecord is the file's content, one JSON object.
type historyRecord struct {
	Failed  int            `json:"failed"`            // failed upgrades of the chain
	Last    *UpgradeResult `json:"last,omitempty"`    // the chain's latest upgrade
	Control string         `json:"control,omitempty"` // the control socket's path
	// ControlFile identifies the socket file at Control as the generation
	// that bound it found it: a successor changes the file's mode or group
	// only if a descriptor shows this very file (see settle).
	ControlFile *fileID `json:"control_file,omitempty"`
}

// fileID identifies a file independently of its name (st_dev, st_ino).
type fileID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// historyMu serialises reads and writes of the history file in this
// process. It is process-wide because the file is: a process has one
// Upgrader, and so one history.
var historyMu sync.Mutex

// openHistory returns the history file of upg's inventory, inherited or
// new; nil (logged) if there can be none.
func openHistory(upg *molt.Upgrader, log *slog.Logger) *os.File {
	f, err := upg.File(historyName)
	if errors.Is(err, molt.ErrNotFound) {
		if f, err = newHistoryFile(); err == nil {
			if err = reserved.AddFile(upg, historyName, f); err != nil { // under molt's reserved prefix
				f.Close()
			}
		}
	}
	if err != nil {
		log.Warn("control: no upgrade history: status shows this generation's upgrades only", "err", err)
		return nil
	}
	return f
}

// readHistory reads the history of upg's inventory, if it has one.
func readHistory(upg *molt.Upgrader) (historyRecord, bool) {
	f, err := upg.File(historyName)
	if err != nil {
		return historyRecord{}, false
	}
	historyMu.Lock()
	defer historyMu.Unlock()
	return loadHistoryLocked(f)
}

func loadHistoryLocked(f *os.File) (historyRecord, bool) {
	var h historyRecord
	b, err := io.ReadAll(io.NewSectionReader(f, 0, maxHistory))
	if err != nil || len(b) == 0 || json.Unmarshal(b, &h) != nil {
		return historyRecord{}, false
	}
	return h, true
}

// updateHistory changes the record with fn. Failures are ignored: the
// history only completes the status. The record is rewritten in place; a
// reader in another process that meets a half-written record (a successor
// asked before it is ready) finds no valid JSON and falls back to Stats.
func updateHistory(f *os.File, fn func(*historyRecord)) {
	historyMu.Lock()
	defer historyMu.Unlock()
	h, _ := loadHistoryLocked(f)
	fn(&h)
	b, err := json.Marshal(h)
	if err != nil || len(b) > maxHistory {
		return
	}
	if _, err := f.WriteAt(b, 0); err == nil {
		f.Truncate(int64(len(b)))
	}
}
