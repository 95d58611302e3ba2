// Package handoff measures how long an upgrade takes to hand N listening
// TCP sockets from a serving process to its successor, for N = 1, 10, 100,
// 1,000 and 10,000, with three systems:
//
//   - molt: the serving process calls Upgrader.Upgrade; its
//     successor (the same binary) calls molt.New, takes the N listeners
//     back with Upgrader.Listen under the same addresses (as the inventory
//     arrives) and calls Ready, which returns once the old process
//     acknowledged.
//   - tableflip: the same with github.com/cloudflare/tableflip: New, Listen,
//     Upgrade, Ready (which returns once it has written its ready byte), Exit.
//   - exec: the baseline. The serving process starts the same binary with
//     syscall.StartProcess (what os/exec does underneath), the N listening
//     sockets at descriptors 3..N+2 (their own descriptors, not duplicates)
//     and a pipe; the successor makes a
//     listener of each descriptor with net.FileListener, as the others do,
//     and writes one byte on the pipe. No library, no protocol: molt − exec
//     is what molt adds to starting a process.
//
// # What is timed
//
// The benchmark (the driver) starts a chain: the test binary re-executed
// with an environment variable naming the system, which TestMain turns into
// a generation. Generation 1 creates the N listeners; this, like all set-up,
// is outside the timer. For each iteration the driver sends SIGHUP to the
// serving generation, which calls Upgrade; the successor reports when its
// Ready returned; the old generation exits. Per iteration:
//
//   - handoff-ns/op: in the processes, from the moment the old generation
//     calls Upgrade (exec: starts building the child's descriptor table) to
//     the moment the successor's Ready returned (exec: its ready byte was
//     written), both read from CLOCK_MONOTONIC, which all processes of a
//     machine share. This is the hand-off itself, fork, exec and the Go
//     runtime's start included; the driver's signal and reports are not.
//   - successor-ns/op: the part of handoff-ns/op from the successor's
//     TestMain to its Ready returned: what the successor does once its
//     runtime is up (receive the inventory, make the listeners, say it is
//     ready). The rest is the old process's share, the fork and exec, and
//     the runtime's start.
//   - ns/op: as the driver saw it, from sending SIGHUP to reading the
//     successor's ready report.
//   - first-accept-ns/op: from the Upgrade call to the successor's first
//     accepted connection, which is when clients are served: the driver
//     dials listener 0 before each upgrade (nobody else accepts, so the
//     connection waits in the backlog), and the successor accepts once on
//     listener 0 as soon as it has made it. molt and tableflip make
//     listener 0 first; the exec baseline makes it last.
//   - the phases of a hand-off, each from one mark to the next, where the
//     system shows both (marks_linux_test.go): fork-exec-ns/op (Upgrade
//     called → the exec returned; molt and exec), runtime-start-ns/op
//     (→ the successor's TestMain; molt and exec), to-main-ns/op (the two
//     together, for all three), new-ns/op (TestMain → the library's New
//     returned: molt has read the HELLO; the generation's own set-up,
//     the same in all three, is in it), claim-ns/op (→ every listener made
//     from its inherited socket: molt's inventory arrives meanwhile),
//     ready-msg-ns/op (Ready called → the parent has read the ready
//     message; molt and exec) and ack-ns/op (molt: the commit hooks ran
//     → the successor's Ready returned on the ACK).
//
// Before the next iteration, outside the timer, the driver waits until the
// old generation has exited and checks that the successor holds the same N
// sockets (the same addresses and kernel-chosen ports) as generation 1.
// tableflip refuses to upgrade before its parent has exited; the others do
// not, but wait as well, so that no process competes for the CPU with a
// measured hand-off. A tableflip generation also waits for its Upgrader to
// have seen its parent exit (WaitForParent) before the clock starts, and
// calls Upgrade again when tableflip refuses it for a state its own loop is
// about to note (ready, parent gone): the driver signals as soon as Ready
// returned, sooner than a real deployment would.
//
// Listener i is bound to 127.0.0.(i+1) and so on through 127.0.0.0/8, port
// 0: tableflip keys inherited listeners by the address string as written,
// so N listeners on "127.0.0.1:0" would collapse into one. Each system finds
// its listeners under the same addresses; molt keeps the kernel-chosen
// ports. No generation accepts connections: an accept loop costs the same
// under every system and would only add noise.
//
// # Fairness of the baseline
//
// All three run the same binary (this test binary, with molt and tableflip
// linked in), so executable size, dynamic loading and the runtime's start
// are the same. Their successors do the same work apart from the protocol:
// start, install the same signal handlers, turn N inherited descriptors into
// N net.Listeners, tell the parent. The old processes all hold the N
// listeners when they fork, so the kernel copies descriptor tables of at
// least N entries in every case; what molt or tableflip hold beyond that is
// part of their cost.
//
// # Descriptors
//
// At an upgrade, molt sends the listeners' own descriptors, a batch of 200
// at a time, and holds N; tableflip holds 2N from the start, a duplicate
// per listener, and its fork may need up to 3N, because Go's fork first
// moves every descriptor whose number is below its place in the child
// above the highest one. The driver raises RLIMIT_NOFILE to 3N + 256 if it
// may (root may, up to fs.nr_open; a container without CAP_SYS_RESOURCE
// may not). Where it stays lower, a case that does not fit fails with
// "too many open files" (or EBADF from fork/exec) and is reported as
// skipped, visible with -v: with a hard limit of 20,000, tableflip cannot
// hold 10,000 listeners at all. The exec baseline passes the listeners'
// own descriptors and needs N.
//
// # Running it
//
// Linux only: the driver is a child subreaper, so it reaps every
// generation and checks that none is left (package internal/reap of the
// root module), and the listeners use Linux's loopback /8. From bench/:
//
//	go test ./handoff -run '^$' -bench . -count 10 | tee new.txt
//	benchstat new.txt
//
// -count 10 measures each case ten times in a row. On a shared machine,
// whose load changes by the minute, repeat whole runs instead, so that the
// three systems are measured side by side:
//
//	for i in $(seq 10); do go test ./handoff -run '^$' -bench . -benchtime 20x; done > new.txt
//
// The default run (-bench . -count 1) takes well under a minute;
// -benchtime 20x fixes the iteration count. Two flags of this package,
// which go test accepts after the package list: -handoff.listeners=100,9990
// chooses other listener counts, and -handoff.cpuprofile=DIR writes a CPU
// profile of every generation's part of each hand-off into DIR, named
// SYSTEM-nN-successor-*.pprof (TestMain → Ready returned) and
// SYSTEM-nN-upgrade-*.pprof (the Upgrade call). pprof merges several:
//
//	go tool pprof -top DIR/molt-n1000-successor-*.pprof
//
// Profiling slows the hand-offs down; take numbers from runs without it.
// go test ./handoff (TestHandoff) runs two upgrades of each system at 10
// listeners.
//
// The numbers are indicative: driver and generations share the machine's
// CPUs with everything else that runs, and each hand-off includes a fork,
// an exec and a Go runtime start, whose cost varies with the load.
package handoff
