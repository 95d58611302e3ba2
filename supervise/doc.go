// Package supervise replaces programs that do not use molt without
// dropping a connection: a supervisor owns the listening sockets, starts
// the program with them by the sd_listen_fds(3) protocol, and upgrades by
// starting a new instance on the same sockets, waiting until it is ready
// and only then stopping the old one. It is what "molt run" runs.
//
// An instance gets the sockets as descriptors 3, 4, ... with LISTEN_FDS,
// LISTEN_FDNAMES and LISTEN_PID set to its own process ID, and a
// NOTIFY_SOCKET of the supervisor's own, where it may say READY=1,
// STATUS=... and STOPPING=1 (sd_notify(3)); senders are authenticated by
// the kernel's SCM_CREDENTIALS. A program that does not notify is probed
// instead ([Options.Ready]).
//
// LISTEN_PID must name the instance, whose process ID exists only after
// the fork, and Go cannot run code between fork and exec. So an instance
// is started through a shim: the supervisor's own executable, re-executed
// with a marker in its environment, sets LISTEN_PID to its process ID and
// executes the program, keeping that ID. A binary that embeds a
// Supervisor must call [ExecShim] first thing in main.
//
// An upgrade starts the new instance, gives it [Options.Grace] to become
// ready, then sends the old instance [Options.StopSignal] and gives it
// [Options.Drain] before its process group is killed. A new instance that
// exits or misses the grace is killed with its process group and reaped,
// the old one serves on, and the upgrade's result says why. One upgrade
// runs at a time.
//
// The Supervisor reaps every child of its process (it is a child
// subreaper on Linux, and reaps orphans when it is process 1), so nothing
// else in that process may wait for children.
package supervise
