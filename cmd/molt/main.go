// Command molt drives a service built with molt through its control socket
// and reports the result: whether an upgrade worked, and if not, why.
//
// Usage:
//
//	molt [flags] upgrade|check|stop|status
//
// The commands are:
//
//	upgrade   start a new generation of the service and wait for the result
//	check     run the new binary's pre-flight check, without upgrading
//	stop      stop the service gracefully (it drains, then exits)
//	status    show the serving generation
//
// The flags, accepted before or after the command, are:
//
//	-s, --socket PATH   the control socket (default: $MOLT_SOCKET)
//	    --if-generation N
//	                    upgrade only if generation N serves (refused otherwise)
//	    --json          print the reply as JSON, for scripts
//	    --timeout D     give up waiting after D (default: 5m for upgrade and check, 10s otherwise)
//	-h, --help          show the usage
//
// The exit status says what happened, so a deploy script or an
// orchestrator can stop a rollout on the first failure:
//
//	0  success
//	1  failed: the upgrade or the check failed (the service goes on serving), or the
//	   service refused the request
//	2  usage error
//	3  an upgrade is already in progress; nothing was started
//	4  unreachable: no service accepts on the socket
//	5  permission denied: the socket's permissions, or the service refused
//	   this user
//	6  no reply within the timeout, or the connection was lost: the
//	   outcome is unknown (ask with molt status)
//	7  another generation than --if-generation's serves: someone else
//	   upgraded the service since; nothing was started
//	8  too many older generations of the service are still draining
//	   (molt.Options.MaxDraining); nothing was started: upgrade again
//	   once one has exited
//
// Results go to standard output, errors to standard error. With --json
// every outcome, errors included, is one JSON object on standard output:
// the service's reply (see package control), or {"ok":false,"code":...,
// "error":...} when there was none ("unreachable", "permission_denied",
// "no_reply", "unavailable", "protocol_error"). On a terminal a progress
// line on standard error shows that molt is waiting.
package main

import (
	"os"

	"github.com/moltgo/molt/supervise"
)

func main() {
	supervise.ExecShim() // molt run starts each instance through this binary
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, isTerminal(os.Stderr)))
}
