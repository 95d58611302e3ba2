//go:build linux

package control_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/internal/proctest"
)

// TestConnectionShares floods a service's control socket from two other
// users while root upgrades it 20 times and then stops it. One flooder is
// allowed (a member of Options.Group) and keeps more connections open than
// its share, reconnecting as soon as one ends; the other is not allowed,
// and reaches the socket only through a wide Options.Mode. Every one of
// root's requests must succeed, and the service must log the refusals a
// line per user per interval, not a line per connection.
func TestConnectionShares(t *testing.T) {
	requireRoot(t)
	const (
		groupID    = 4343
		allowedUID = 4242 // in the group
		otherUID   = 4244
		upgrades   = 20
	)
	dir := proctest.ShortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil { // others may reach the socket
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	svc := startService(t, "service", sock, envMode+"=666", envGroup+"="+strconv.Itoa(groupID))
	svc.ev.Wait(t, "ready")
	start := time.Now()

	allowed := startAsUser(t, allowedUID, groupID, "flood", envSock+"="+sock, envWorkers+"=80")
	other := startAsUser(t, otherUID, otherUID, "flood", envSock+"="+sock, envWorkers+"=8")
	if got := allowed.ev.Wait(t, "saturated"); got["code"] != string(control.CodeBusy) {
		t.Errorf("the allowed flooder's first refusal: %v; want busy (its share is used up)", got)
	}
	if got := other.ev.Wait(t, "saturated"); got["code"] != string(control.CodePermissionDenied) {
		t.Errorf("the other user's first refusal: %v; want permission_denied", got)
	}

	c, ctx := client(t, sock)
	var failures []string
	for i := 1; i <= upgrades; i++ {
		res, err := c.Upgrade(ctx)
		if err != nil {
			failures = append(failures, "upgrade "+strconv.Itoa(i)+": "+err.Error())
			continue
		}
		if st, err := c.Status(ctx); err != nil {
			failures = append(failures, "status after upgrade "+strconv.Itoa(i)+": "+err.Error())
		} else if st.Generation != res.Successor() {
			failures = append(failures, "status after upgrade "+strconv.Itoa(i)+": generation "+strconv.FormatUint(st.Generation, 10))
		}
	}
	if err := c.Stop(ctx); err != nil {
		failures = append(failures, "stop: "+err.Error())
	} else {
		for i := 0; i <= upgrades; i++ { // every generation says it exits; the last, stopped
			if svc.ev.Wait(t, "exiting")["reason"] == "stopped" {
				break
			}
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d of root's %d requests failed under the flood; first: %s", len(failures), 2*upgrades+1, failures[0])
	}

	a := allowed.stop(t, "flooded")
	o := other.stop(t, "flooded")
	elapsed := time.Since(start)
	t.Logf("in %v: the allowed flooder was refused %s times busy, the other user %s times (denied)", elapsed.Round(time.Millisecond), a["busy"], o["denied"])
	if n, _ := strconv.Atoi(a["busy"]); n == 0 {
		t.Errorf("the allowed flooder was never refused as busy: %v", a)
	}
	if n, _ := strconv.Atoi(o["denied"]); n == 0 {
		t.Errorf("the other user was never refused: %v", o)
	}

	// Each generation logs, per refused user, its first refusal, then at
	// most one line per interval, then what it counted when it closes.
	logs := svc.stderr.String()
	lines, counted := 0, 0
	for line := range strings.Lines(logs) {
		if !strings.Contains(line, `"msg":"control: connection refused"`) {
			continue
		}
		lines++
		var rec struct{ Refused int }
		if err := json.Unmarshal([]byte(line), &rec); err == nil && rec.Refused > 1 {
			counted += rec.Refused
		}
	}
	generations := upgrades + 1
	intervals := int(elapsed/(5*time.Second)) + 1
	if limit := generations * 2 * (2 + intervals); lines > limit || lines == 0 {
		t.Errorf("the service logged %d refusal lines; want 1 to %d (2 users, %d generations, %d intervals)", lines, limit, generations, intervals)
	}
	if counted == 0 {
		t.Errorf("no refusal line counts more than one refusal")
	}
	t.Logf("%d refusal lines counted %d refusals", lines, counted)
}
