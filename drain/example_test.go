package drain_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/moltgo/molt/drain"
)

// Serve an http.Server through drain, then drain it: the request that
// arrived before the drain is answered, with "Connection: close" if it was
// still running.
func ExampleHTTPServer() {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // from molt's Upgrader in a real service
	if err != nil {
		log.Fatal(err)
	}
	srv := drain.NewHTTPServer(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	})})
	go srv.Serve(ln)

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("drained:", srv.Drain(ctx))
	http.DefaultClient.CloseIdleConnections()
	// Output:
	// hello
	// drained: <nil>
}
