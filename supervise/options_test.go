package supervise_test

import (
	"errors"
	"testing"

	"github.com/moltgo/molt/supervise"
)

func TestParseSocket(t *testing.T) {
	for _, bad := range []string{"", "web", "web=", "=tcp://:80", "a:b=tcp://:80", "web=tcp://nohost", "web=udp://:53",
		"web=unix://relative.sock", "web=127.0.0.1:80"} {
		if _, err := supervise.ParseSocket(bad); !errors.Is(err, supervise.ErrBadSocket) {
			t.Errorf("ParseSocket(%q) = %v, want ErrBadSocket", bad, err)
		}
	}
	for in, want := range map[string]supervise.Socket{
		"web=tcp://127.0.0.1:8080": {Name: "web", Network: "tcp", Address: "127.0.0.1:8080"},
		"v6=tcp6://[::1]:0":        {Name: "v6", Network: "tcp6", Address: "[::1]:0"},
		"s=unix:///run/a.sock":     {Name: "s", Network: "unix", Address: "/run/a.sock"},
	} {
		if got, err := supervise.ParseSocket(in); err != nil || got != want {
			t.Errorf("ParseSocket(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

func TestParseProbe(t *testing.T) {
	for _, bad := range []string{"", "ftp://h:1/", "http://h/", "tcp://h", "http://[::1/"} {
		if _, err := supervise.ParseProbe(bad); !errors.Is(err, supervise.ErrBadProbe) {
			t.Errorf("ParseProbe(%q) = %v, want ErrBadProbe", bad, err)
		}
	}
	for in, want := range map[string]supervise.Probe{
		"http://127.0.0.1:8080/healthz?x=1": {Kind: "http", Addr: "127.0.0.1:8080", Path: "/healthz?x=1"},
		"http://instance/ready":             {Kind: "http", Addr: "instance", Path: "/ready"},
		"tcp://127.0.0.1:9":                 {Kind: "tcp", Addr: "127.0.0.1:9"},
		"tcp://instance":                    {Kind: "tcp", Addr: "instance"},
	} {
		got, err := supervise.ParseProbe(in)
		if err != nil || *got != want {
			t.Errorf("ParseProbe(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}
