package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moltgo/molt/control"
)

// location is the time zone of the times molt prints.
var location = time.Local

// printReply prints a reply for people: results to stdout, failures to
// stderr.
func printReply(stdout, stderr io.Writer, rep *control.Reply, now time.Time) {
	if rep.Code != control.CodeOK {
		printFailure(stderr, rep)
		return
	}
	switch rep.Op {
	case control.OpUpgrade:
		u := rep.Upgrade
		if u == nil {
			fmt.Fprintln(stdout, "upgraded")
			return
		}
		fmt.Fprintf(stdout, "upgraded: pid %d serves as generation %d (took %s; pid %d drains and exits)\n",
			u.SuccessorPID, u.Successor(), duration(u.Duration), u.PID)
	case control.OpCheck:
		took := ""
		if c := rep.Check; c != nil {
			took = " in " + duration(c.Duration)
		}
		fmt.Fprintf(stdout, "check passed%s: the new binary may be upgraded to\n", took)
	case control.OpStop:
		fmt.Fprintf(stdout, "stopping: pid %d (generation %d) stops accepting, drains and exits\n", rep.PID, rep.Generation)
	case control.OpStatus:
		if rep.Status != nil {
			printStatus(stdout, rep.Status, now)
		}
	}
}

// printFailure explains a reply that is not ok.
func printFailure(w io.Writer, rep *control.Reply) {
	switch rep.Code {
	case control.CodeFailed:
		if printResult(w, "upgrade", rep.Upgrade, rep.Error) {
			fmt.Fprintf(w, "molt: pid %d (generation %d) goes on serving\n", rep.PID, rep.Generation)
		}
	case control.CodeCheckFailed:
		printResult(w, "check", rep.Check, rep.Error)
	case control.CodeInProgress, control.CodeTooManyDraining:
		fmt.Fprintf(w, "molt: upgrade not started: %s\n", rep.Error)
	case control.CodePermissionDenied:
		fmt.Fprintf(w, "molt: %s: %s\n", rep.Op, rep.Error)
		fmt.Fprintln(w, "molt: run molt as the service's user or as root")
	default:
		fmt.Fprintf(w, "molt: %s: %s (%s)\n", rep.Op, rep.Error, rep.Code)
	}
}

// printResult explains a failed upgrade or check (what) from its result
// r, with the check's output, and reports whether there was a result;
// without one it prints the reply's error msg.
func printResult(w io.Writer, what string, r *control.UpgradeResult, msg string) bool {
	if r == nil {
		fmt.Fprintf(w, "molt: %s failed: %s\n", what, msg)
		return false
	}
	fmt.Fprintf(w, "molt: %s failed after %s: %s\n", what, duration(r.Duration), failure(r))
	printOutput(w, r.Output)
	return true
}

// failure describes why an upgrade failed, with the successor's exit
// status when the reason does not already say it.
func failure(u *control.UpgradeResult) string {
	reason := u.Reason
	if u.ExitStatus != "" && !strings.Contains(reason, u.ExitStatus) {
		reason += " (" + u.ExitStatus + ")"
	}
	switch {
	case u.SuccessorPID == 0:
		return "the successor did not start: " + reason
	case u.Stage == "":
		return fmt.Sprintf("successor pid %d: %s", u.SuccessorPID, reason)
	case u.Stage == "probation":
		return fmt.Sprintf("rolled back: successor pid %d failed during its probation: %s", u.SuccessorPID, reason)
	case u.Stage == "check":
		return fmt.Sprintf("the new binary's check (pid %d) failed: %s", u.SuccessorPID, reason)
	}
	return fmt.Sprintf("successor pid %d failed during %s: %s", u.SuccessorPID, u.Stage, reason)
}

// printOutput prints a check's output, indented, under its failure.
func printOutput(w io.Writer, out string) {
	out = strings.TrimRight(out, "\n")
	if out == "" {
		return
	}
	fmt.Fprintln(w, "molt: the check's output:")
	for line := range strings.SplitSeq(out, "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
}

// printStatus prints a status as aligned name/value lines.
func printStatus(w io.Writer, st *control.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "pid\t%d\n", st.PID)
	gen := fmt.Sprint(st.Generation)
	if st.ParentPID != 0 {
		gen += fmt.Sprintf(" (parent pid %d)", st.ParentPID)
	}
	fmt.Fprintf(tw, "generation\t%s\n", gen)
	fmt.Fprintf(tw, "state\t%s\n", st.State)
	fmt.Fprintf(tw, "uptime\t%s (since %s)\n", st.Uptime.Round(time.Second), st.Started.In(location).Format("2006-01-02 15:04:05 MST"))
	fmt.Fprintf(tw, "upgrades\t%d done, %d failed\n", st.Upgrades, st.FailedUpgrades)
	fmt.Fprintf(tw, "last upgrade\t%s\n", lastUpgrade(st.LastUpgrade, now))
	if len(st.Draining) > 0 {
		fmt.Fprintf(tw, "draining\t%s\n", pidList(st.Draining))
	}
	tw.Flush()

	if len(st.Listeners) == 0 {
		fmt.Fprintln(w, "listeners     none")
		return
	}
	lw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for i, l := range st.Listeners {
		label := ""
		if i == 0 {
			label = "listeners"
		}
		origin := "new"
		if l.Inherited {
			origin = "inherited"
		}
		var notes []string
		if l.Name != "" {
			notes = append(notes, fmt.Sprintf("name %q", l.Name))
		}
		if l.Control {
			notes = append(notes, "control")
		}
		line := fmt.Sprintf("%-12s\t%s\t%s\t%s", label, l.Network, l.Address, origin)
		if len(notes) > 0 {
			line += "\t" + strings.Join(notes, ", ")
		}
		fmt.Fprintln(lw, line)
	}
	lw.Flush()
}

// lastUpgrade describes the latest upgrade in a line.
func lastUpgrade(u *control.UpgradeResult, now time.Time) string {
	if u == nil {
		return "none"
	}
	ago := now.Sub(u.Started.Add(u.Duration)).Round(time.Second)
	if u.OK {
		return fmt.Sprintf("ok: pid %d took over from pid %d as generation %d in %s, %s ago",
			u.SuccessorPID, u.PID, u.Successor(), duration(u.Duration), ago)
	}
	return fmt.Sprintf("failed after %s, %s ago: %s", duration(u.Duration), ago, failure(u))
}

// duration rounds d for people: 48.2ms, 1.23s, 2m5s.
func duration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// pidList names the older generations still draining: "pid 12, pid 34".
func pidList(pids []int) string {
	names := make([]string, len(pids))
	for i, pid := range pids {
		names[i] = fmt.Sprintf("pid %d", pid)
	}
	return strings.Join(names, ", ")
}
