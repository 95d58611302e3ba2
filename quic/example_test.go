//go:build unix

package quic_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/moltgo/molt"
	moltquic "github.com/moltgo/molt/quic"
	"github.com/quic-go/quic-go/http3"
)

// An HTTP/3 server whose connections survive upgrades. A real service
// waits for <-upg.Exit() where this example goes on at once.
func Example() {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	pc, err := moltquic.ListenPacket(upg, "udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	tr := pc.Transport()
	defer tr.Close()
	ln, err := tr.ListenEarly(serverTLS(), nil) // a tls.Config with NextProtos h3
	if err != nil {
		log.Fatal(err)
	}
	srv := &http3.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	})}
	go srv.ServeListener(ln)
	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("generation", upg.Generation(), "serves HTTP/3")

	// <-upg.Exit(): upgraded (or stopped). Drain, then return.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := moltquic.DrainHTTP3(ctx, srv, ln); err != nil {
		log.Print(err)
	}
	// Output: generation 1 serves HTTP/3
}
