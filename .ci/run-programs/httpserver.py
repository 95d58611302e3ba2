#!/usr/bin/env python3
"""python3 -m http.server, wrapped to serve the sockets molt run passes.

It takes every descriptor of LISTEN_FDS (from 3, as sd_listen_fds(3)),
checks LISTEN_PID, serves the current directory on each, answers
/healthz, and on SIGTERM stops accepting, answers what it accepted with
"Connection: close" and exits once its requests are done. Started with a
port and without LISTEN_FDS, it binds 127.0.0.1:PORT itself (the
stop/start comparison).
"""
import http.server
import os
import signal
import socket
import sys
import threading

draining = threading.Event()


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = 2  # an idle keep-alive connection is closed after 2 s

    def log_message(self, *args):
        pass

    def end_headers(self):
        if draining.is_set():
            self.close_connection = True
        if self.close_connection:  # draining, or the client asked to close
            self.send_header("Connection", "close")
        super().end_headers()

    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


def main():
    socks = []
    if "LISTEN_FDS" not in os.environ and len(sys.argv) > 1:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(sys.argv[1])))
        sock.listen(128)
        socks.append(sock)
    else:
        if os.environ.get("LISTEN_PID") != str(os.getpid()):
            sys.exit("LISTEN_PID does not name this process: not started by socket activation")
        n = int(os.environ.get("LISTEN_FDS", "0"))
        if n < 1:
            sys.exit("no sockets passed (LISTEN_FDS)")
        socks = [socket.socket(fileno=fd) for fd in range(3, 3 + n)]
    servers = []
    for sock in socks:
        # Non-blocking: the socket is shared with the other instance, and a
        # blocking accept after a select that the other instance won would
        # keep serve_forever from seeing its shutdown.
        sock.setblocking(False)
        srv = http.server.ThreadingHTTPServer(sock.getsockname(), Handler, bind_and_activate=False)
        srv.socket.close()
        srv.socket = sock
        srv.daemon_threads = False
        srv.block_on_close = True
        servers.append(srv)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}) for s in servers]
    for t in threads:
        t.start()

    def stop(signum, frame):
        draining.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # The main thread waits here, where signal handlers run, and stops the
    # servers itself once told to.
    while not draining.wait(0.2):
        pass
    for s in servers:
        s.shutdown()  # serve_forever returns: no more accepts
    for t in threads:
        t.join()
    for s in servers:
        s.server_close()  # waits for the requests in flight


if __name__ == "__main__":
    main()
