package main

import (
	"fmt"
	"slices"
	"strings"
)

// envSystem selects the server's implementation of an upgrade; the driver
// sets it for generation 1 and every successor inherits it.
const envSystem = "DRAINBENCH_SYSTEM"

// envGen tells a server its generation where the library does not count
// generations (tableflip) or the driver starts every process (naive,
// reuseport).
const envGen = "DRAINBENCH_GEN"

// envTakeover is the takeover socket of molt's generations with -takeover:
// each serves it and the next takes over through it.
const envTakeover = "DRAINBENCH_TAKEOVER"

// envAddr is the fixed address the driver reserves for the systems that
// bind a port anew in every process.
const envAddr = "DRAINBENCH_ADDR"

// system is one way of replacing a server process.
type system struct {
	name string
	// selfUpgrade: the serving process upgrades itself on SIGHUP; otherwise
	// the driver starts and stops the processes.
	selfUpgrade bool
	// waitOldExit: the next upgrade may start only once the previous
	// generation has exited (tableflip refuses it before).
	waitOldExit bool
	// stopFirst: the old process stops before the new one starts (naive).
	stopFirst bool
	// fixedAddr: the processes bind one address the driver reserved.
	fixedAddr bool
	// takeover: the driver starts each new process, which takes over
	// through the serving one's takeover socket (molt with -takeover).
	takeover bool
	note     string
}

// systems are the ways of replacing a process the driver knows.
var systems = []system{
	{
		name: "molt", selfUpgrade: true,
		note: "molt with molt/drain: the successor inherits the listener and the idle keep-alive connections over a socketpair; the old process drains",
	},
	{
		name: "tableflip", selfUpgrade: true, waitOldExit: true,
		note: "tableflip v1.2.3 as in its net/http example: Upgrade on SIGHUP, then `<-upg.Exit()` and `server.Shutdown` in the old process",
	},
	{
		name: "naive", stopFirst: true, fixedAddr: true,
		note: "the driver sends SIGTERM (`server.Shutdown`), waits for the process to exit, then starts the new one on the same port",
	},
	{
		name: "reuseport", fixedAddr: true,
		note: "the driver starts the new process on the same port with SO_REUSEPORT, waits until it is ready, then sends the old one SIGTERM (`server.Shutdown`)",
	},
}

// byTakeover returns molt upgraded by takeovers instead of SIGHUP: the
// driver starts every generation, and each takes over through the serving
// one's takeover socket (Options.TakeoverSocket and TakeoverFrom).
func (s system) byTakeover() system {
	s.selfUpgrade, s.takeover = false, true
	s.note = "molt with molt/drain, upgraded by takeovers: the driver starts each new process, which takes the listener and the idle keep-alive connections over through the serving one's takeover socket; the old process drains"
	return s
}

// molt returns molt as c runs it: upgraded by takeovers with -takeover.
func (c config) molt() system {
	s, _ := systemNamed("molt")
	if c.takeover {
		s = s.byTakeover()
	}
	return s
}

// systemNamed returns the system called name.
func systemNamed(name string) (system, bool) {
	i := slices.IndexFunc(systems, func(s system) bool { return s.name == name })
	if i < 0 {
		return system{}, false
	}
	return systems[i], true
}

// parseSystems parses the -systems flag: names separated by commas, each
// at most once.
func parseSystems(list string) ([]system, error) {
	var out []system
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		s, ok := systemNamed(name)
		if !ok {
			return nil, fmt.Errorf("-systems: unknown system %q (known: %s)", name, systemNames())
		}
		if slices.ContainsFunc(out, func(o system) bool { return o.name == name }) {
			return nil, fmt.Errorf("-systems: %q named twice", name)
		}
		out = append(out, s)
	}
	return out, nil
}

func systemNames() string {
	var names []string
	for _, s := range systems {
		names = append(names, s.name)
	}
	return strings.Join(names, ", ")
}

// trigger names what starts an upgrade of s, for the report.
func (s system) trigger() string {
	switch {
	case s.selfUpgrade:
		return "SIGHUP sent"
	case s.stopFirst:
		return "SIGTERM sent to the old process"
	case s.takeover:
		return "the taker started"
	}
	return "the new process started"
}
