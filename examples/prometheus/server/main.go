// Command server is a complete molt service: an HTTP server that answers
// "hello from pid N (generation G)", exports Prometheus metrics on
// /metrics, takes requests on a control socket (molt upgrade|stop|status),
// upgrades on SIGHUP, stops on SIGTERM or SIGINT (twice: at once) and
// drains before it exits.
//
//	go build -o /tmp/svc ./server
//	/tmp/svc -addr 127.0.0.1:8080 -control /tmp/svc.sock &
//	molt -s /tmp/svc.sock status
//	molt -s /tmp/svc.sock upgrade
//	curl -s 127.0.0.1:8080/metrics | grep ^molt_
//
// With -fail, every successor exits with status 3 during its start: the
// way to see a failed upgrade.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/drain"
	moltprom "github.com/moltgo/molt/examples/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "HTTP address")
	sock := flag.String("control", "/tmp/molt-example.sock", "control socket path")
	fail := flag.Bool("fail", false, "make every successor fail during its start (exit status 3)")
	flag.Parse()
	os.Exit(serve(*addr, *sock, *fail))
}

func serve(addr, sock string, fail bool) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := molt.New(molt.Options{Logger: log, ReadyTimeout: 30 * time.Second})
	if err != nil {
		log.Error("molt", "err", err)
		return 1
	}
	defer upg.Stop()
	if fail && upg.HasParent() {
		fmt.Fprintln(os.Stderr, "server: -fail: giving up during the start")
		return 3
	}
	stopSignals := control.HandleSignals(upg, control.SignalOptions{
		Logger: log,
		Force:  func(os.Signal) { os.Exit(1) },
	})
	defer stopSignals()
	ctl, err := control.Listen(upg, sock, control.Options{Logger: log})
	if err != nil {
		log.Error("control", "err", err)
		return 1
	}
	defer ctl.Close()

	ln, err := upg.Listen("tcp", addr)
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(moltprom.NewCollector(upg))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from pid %d (generation %d)\n", os.Getpid(), upg.Generation())
	})
	srv := drain.NewHTTPServer(&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second})
	go srv.Serve(ln)

	if err := upg.Ready(); err != nil {
		log.Error("ready", "err", err)
		return 1
	}
	<-upg.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Drain(ctx); err != nil {
		log.Warn("drain", "err", err)
	}
	return 0
}
