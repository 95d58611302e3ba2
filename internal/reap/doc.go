// Package reap starts and reaps the processes of a driver program — the
// demo (cmd/molt-demo) and the benchmarks (bench/) — which start a server
// whose later generations are started by the earlier ones, not by the
// driver, and which must know when every one of them is gone.
//
// On Linux the driver becomes a child subreaper: a generation whose parent
// exits is re-parented to the driver, not to init, so the driver reaps
// every generation and learns how each one ended, and "no child left"
// (wait4 failing with ECHILD) means that no descendant is left at all,
// since every living descendant of a subreaper has a chain of living
// ancestors up to it. Elsewhere ([SeesEveryProcess] is false) the Reaper
// knows only the processes it started itself; the driver must find out
// some other way that the rest are gone (the demo and the benchmarks wait
// for the end of an output pipe that every generation holds).
//
// There is one [Reaper] per process, and from [New] on it reaps every
// child of the process: start each one with [Reaper.Start] and never wait
// for one in any other way (exec.Cmd.Wait, os.Process.Wait).
package reap
