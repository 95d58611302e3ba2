package supervise

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// probeInterval is the pause between two probes of a starting instance.
const probeInterval = 50 * time.Millisecond

// probeTimeout bounds one probe.
const probeTimeout = 2 * time.Second

// prober runs a Probe.
type prober struct {
	p  *Probe
	tr *http.Transport
}

func newProber(p *Probe) *prober {
	if p == nil {
		return nil
	}
	return &prober{p: p, tr: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
}

// once probes addr (the probe's own address unless it is private) and
// reports whether the instance answered as ready.
func (pr *prober) once(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if pr.p.Kind == "tcp" {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+pr.p.Path, nil)
	if err != nil {
		return err
	}
	if pr.p.Private() {
		req.Host = "localhost"
	}
	resp, err := pr.tr.RoundTrip(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}

// run probes until the instance answers (it then calls ready and returns
// nil), or ctx ends (it returns the last probe's error).
func (pr *prober) run(ctx context.Context, addr string, ready func()) error {
	t := time.NewTimer(0)
	defer t.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			return last
		case <-t.C:
		}
		if last = pr.once(ctx, addr); last == nil {
			ready()
			return nil
		}
		t.Reset(probeInterval)
	}
}

func (pr *prober) close() {
	if pr != nil {
		pr.tr.CloseIdleConnections()
	}
}
