// Package requests holds the HTTP requests the benchmark clients send and
// the checks of their answers, shared by every command in bench/: GET /
// (answered with the server's PID) and POST /echo (answered with the
// server's PID and the length of the body it read).
package requests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// PostSize is the length of every POST body.
const PostSize = 1024

// PostBody is the body of every POST; read it, never change it.
var PostBody = bytes.Repeat([]byte("x"), PostSize)

// ReadBody reads the response's body (at most 1 MB) and checks its status.
func ReadBody(resp *http.Response, err error) (string, error) {
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return string(b), fmt.Errorf("reading the body after %d bytes: %w", len(b), err)
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("status %s, body %.80q", resp.Status, b)
	}
	return string(b), nil
}

// GetRoot sends GET / and checks that the body is a PID.
func GetRoot(ctx context.Context, c *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
	if err != nil {
		return err
	}
	body, err := ReadBody(c.Do(req))
	if err != nil {
		return err
	}
	if _, err := strconv.Atoi(body); err != nil {
		return fmt.Errorf("GET /: body %.80q is not a PID", body)
	}
	return nil
}

// PostNoRetry sends POST /echo with a body Go cannot rewind (no GetBody),
// so its Transport never sends it twice.
func PostNoRetry(ctx context.Context, c *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/echo", io.NopCloser(bytes.NewReader(PostBody)))
	if err != nil {
		return err
	}
	req.ContentLength = PostSize
	return CheckEcho(c.Do(req))
}

// CheckEcho checks the answer to POST /echo: it must report PostSize bytes.
func CheckEcho(resp *http.Response, err error) error {
	body, err := ReadBody(resp, err)
	if err != nil {
		return err
	}
	if !strings.HasSuffix(body, " "+strconv.Itoa(PostSize)) {
		return fmt.Errorf("POST /echo: body %.80q does not report %d bytes", body, PostSize)
	}
	return nil
}
