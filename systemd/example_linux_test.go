package systemd_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/systemd"
)

// fakeManager stands in for systemd in the examples: it listens on a
// notification socket, points NOTIFY_SOCKET at it, and returns each
// datagram with this process's PID written "<pid>". Barrier pipes are
// closed as systemd closes them.
func fakeManager() (next func() string, stop func()) {
	dir, err := os.MkdirTemp("", "sdx")
	if err != nil {
		log.Fatal(err)
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: dir + "/notify", Net: "unixgram"})
	if err != nil {
		log.Fatal(err)
	}
	os.Setenv("NOTIFY_SOCKET", dir+"/notify")
	pid := strconv.Itoa(os.Getpid())
	next = func() string {
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			log.Fatal(err)
		}
		if cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range cmsgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
		return strings.ReplaceAll(strings.ReplaceAll(string(buf[:n]), pid, "<pid>"), "\n", " ")
	}
	stop = func() {
		os.Unsetenv("NOTIFY_SOCKET")
		c.Close()
		os.RemoveAll(dir)
	}
	return next, stop
}

// Sending notifications directly; the socket is NOTIFY_SOCKET's.
func ExampleNotifier_Notify() {
	next, stop := fakeManager()
	defer stop()

	n, err := systemd.NewNotifier()
	if err != nil {
		log.Fatal(err) // systemd.ErrNoNotifySocket outside systemd
	}
	ctx := context.Background()
	if err := n.Notify(ctx, systemd.Ready, systemd.Status("serving on :8080")); err != nil {
		log.Fatal(err)
	}
	fmt.Println(next())
	// Output: READY=1 STATUS=serving on :8080
}

// A service under systemd: Attach after molt.New, sockets from the Service,
// and the Upgrader's lifecycle reaches systemd by itself.
func ExampleAttach() {
	next, stop := fakeManager()
	defer stop()

	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	svc, err := systemd.Attach(upg, systemd.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	// Handed over by the previous generation, passed by systemd
	// (FileDescriptorName=http), or new.
	ln, err := svc.Listen("http", "tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	// go srv.Serve(ln); on SIGHUP: upg.Upgrade(ctx)

	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(next())
	upg.Stop()
	fmt.Println(next())
	// Output:
	// MAINPID=<pid> READY=1 STATUS=ready: generation 1, pid <pid>
	// STOPPING=1 STATUS=stopping
}

// Without systemd, Listen makes the socket; with Options.FDStore it is
// kept under its name, and stored in systemd's file descriptor store when
// there is one.
func ExampleService_Listen() {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	svc, err := systemd.Attach(upg, systemd.Options{FDStore: true})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	ln, err := svc.Listen("http", "tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	for _, e := range upg.Stats().Inventory {
		fmt.Println(e.Kind, e.Name)
	}
	// Output: listener systemd/http
}
