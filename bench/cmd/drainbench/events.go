package main

// eventName is a server event's name for eventlog ("" for a line that is
// not an event).
func eventName(e serverEvent) string { return e.Event }

func readyOf(gen uint64) func(serverEvent) bool {
	return func(e serverEvent) bool { return e.Event == "ready" && e.Gen == gen }
}

// failedUpgradeOf matches the report of a failed upgrade of gen, or an
// error of any generation: both end a wait for gen's successor.
func failedUpgradeOf(gen uint64) func(serverEvent) bool {
	return func(e serverEvent) bool {
		return (e.Event == "upgrade" && e.Gen == gen && !e.OK) || e.Event == "error"
	}
}
