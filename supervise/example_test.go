package supervise_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/supervise"
)

// A supervisor for gunicorn on port 8080, upgraded through a control
// socket (molt upgrade -s /run/app/control.sock), as "molt run" does it.
func Example() {
	supervise.ExecShim() // first in main: instances start through this binary

	probe, err := supervise.ParseProbe("http://instance/healthz")
	if err != nil {
		log.Fatal(err)
	}
	sup, err := supervise.New(supervise.Options{
		Program: "gunicorn",
		Args:    []string{"app:app"},
		Sockets: []supervise.Socket{{Name: "web", Network: "tcp", Address: "127.0.0.1:8080"}},
		Ready:   probe,
		Logger:  slog.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sup.Close()
	ctl, err := control.ListenService(sup, "/run/app/control.sock", control.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer ctl.Close()
	if err := sup.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	<-sup.Done() // after molt stop, or when gunicorn exits
	os.Exit(sup.ExitCode())
}

func ExampleParseSocket() {
	s, err := supervise.ParseSocket("web=tcp://127.0.0.1:8080")
	fmt.Println(s.Name, s.Network, s.Address, err)
	s, err = supervise.ParseSocket("admin=unix:///run/app/admin.sock")
	fmt.Println(s.Name, s.Network, s.Address, err)
	// Output:
	// web tcp 127.0.0.1:8080 <nil>
	// admin unix /run/app/admin.sock <nil>
}
