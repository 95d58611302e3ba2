package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// listMax bounds the unanswered or non-200 streams listed per run; the
// counts are always complete.
const listMax = 5

// row sums up the runs of one protocol in one upgrade.
type row struct {
	runs, sent, answered, unanswered, resets, non200, failedRuns int
}

func (r *row) add(v verdict, problems []string) {
	r.runs++
	r.sent += v.sent
	r.answered += v.answered
	r.unanswered += len(v.unanswered)
	r.resets += v.resets
	r.non200 += len(v.non200)
	if len(problems) > 0 {
		r.failedRuns++
	}
}

func (r row) ok() bool { return r.unanswered == 0 && r.non200 == 0 && r.failedRuns == 0 }

// printStep prints one upgrade's runs as they end, with what went wrong.
func printStep(st *step) {
	fmt.Printf("upgrade %d (%v):\n", st.n, st.took.Round(time.Millisecond))
	for i, ru := range st.runs {
		v := st.verdicts[i]
		goaways := "none"
		if len(v.goaways) > 0 {
			var g []string
			for _, e := range v.goaways {
				g = append(g, fmt.Sprintf("last_stream_id=%d %s", e.lastStreamID, e.errorCode))
			}
			goaways = strings.Join(g, ", then ")
		}
		fmt.Printf("  %s: %d sent, %d answered, %d unanswered (%d above a GOAWAY's last stream id); GOAWAY %s\n",
			ru.name(), v.sent, v.answered, len(v.unanswered), v.above, goaways)
		list("unanswered", v.unanswered)
		list("not 200", v.non200)
		for _, p := range st.problems[i] {
			fmt.Printf("    problem: %s\n", p)
		}
	}
	for _, p := range st.other {
		fmt.Printf("  problem: %s\n", p)
	}
}

func list(what string, items []string) {
	for i, s := range items {
		if i == listMax {
			fmt.Printf("    %s: … and %d more\n", what, len(items)-listMax)
			return
		}
		fmt.Printf("    %s: %s\n", what, s)
	}
}

// report prints the summary table and the problems outside any run, and
// reports whether the check failed.
func report(steps []*step, problems []string, took time.Duration) (failed bool) {
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "upgrade\tproto\truns\tsent\tanswered\tunanswered\tRST_STREAM\tnot 200\tfailed runs\tresult\t")
	totals := map[string]*row{}
	var protos []string
	for _, st := range steps {
		rows := map[string]*row{}
		var order []string
		for i, ru := range st.runs {
			if rows[ru.proto] == nil {
				rows[ru.proto] = &row{}
				order = append(order, ru.proto)
			}
			rows[ru.proto].add(st.verdicts[i], st.problems[i])
			if totals[ru.proto] == nil {
				totals[ru.proto] = &row{}
				protos = append(protos, ru.proto)
			}
			totals[ru.proto].add(st.verdicts[i], st.problems[i])
		}
		for _, p := range order {
			printRow(tw, fmt.Sprint(st.n), p, *rows[p])
		}
		if len(st.other) > 0 {
			failed = true
			fmt.Fprintf(tw, "%d\t(upgrade failed)\t\t\t\t\t\t\t\t\tFAIL\t\n", st.n)
		}
	}
	for _, p := range protos {
		printRow(tw, "all", p, *totals[p])
		failed = failed || !totals[p].ok()
	}
	tw.Flush()
	for _, p := range problems {
		fmt.Printf("problem: %s\n", p)
	}
	if len(steps) == 0 || len(problems) > 0 {
		failed = true
	}
	verdict := "PASS"
	if failed {
		verdict = "FAIL"
	}
	fmt.Printf("nghttpcheck: %s: %d upgrades in %v\n", verdict, len(steps), took.Round(100*time.Millisecond))
	return failed
}

func printRow(tw *tabwriter.Writer, n, proto string, r row) {
	res := "ok"
	if !r.ok() {
		res = "FAIL"
	}
	fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n",
		n, proto, r.runs, r.sent, r.answered, r.unanswered, r.resets, r.non200, r.failedRuns, res)
}
