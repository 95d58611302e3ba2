//go:build race

package main

// raceEnabled: the test runs with the race detector, and builds the demo
// with it too.
const raceEnabled = true
