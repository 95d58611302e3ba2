module github.com/moltgo/molt/bench

go 1.26.0

require (
	github.com/moltgo/molt v0.0.0-00010101000000-000000000000
	golang.org/x/sys v0.50.0
)

replace github.com/moltgo/molt => ../
