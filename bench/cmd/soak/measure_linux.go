package main

import (
	"os"
	"strconv"
	"strings"
)

// listFDs lists the entries of /proc/self/fd, which include the directory
// descriptor of the listing itself (closed by the time countFDs checks
// it). Without /proc it scans.
func listFDs() ([]int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return scanFDs()
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, err
	}
	fds := make([]int, 0, len(names))
	for _, name := range names {
		if fd, err := strconv.Atoi(name); err == nil {
			fds = append(fds, fd)
		}
	}
	return fds, nil
}

// readRSS returns VmRSS from /proc/self/status, in kB.
func readRSS() (int64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	return parseVmRSS(b)
}

// describeFile names what a descriptor that is not a socket refers to:
// "pipe", "anon_inode:[eventpoll]", a path.
func describeFile(fd int) string {
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "file"
	}
	if kind, _, ok := strings.Cut(target, ":["); ok && !strings.HasPrefix(target, "/") {
		if kind == "anon_inode" {
			return target // anon_inode:[eventpoll], anon_inode:[eventfd]
		}
		return kind // pipe:[inode]: the inode says nothing across processes
	}
	return target
}
