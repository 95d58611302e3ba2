package main

// eventName is a server event's name for eventlog ("" for a line that is
// not an event).
func eventName(e serverEvent) string { return e.Event }
