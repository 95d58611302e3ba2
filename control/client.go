package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"syscall"
	"time"
)

// maxAttempts bounds how often a request answered with [CodeReplaced] is
// sent again. The generation that answered it stops accepting at once, so
// the next connection normally reaches its successor.
const maxAttempts = 50

// maxDialAttempts bounds how often a connect refused with EAGAIN (the
// socket's accept queue is full, as a flood of connections by another
// user can make it for a moment) is tried again, with a growing pause
// of up to 50 ms: about two seconds in all.
const maxDialAttempts = 50

// Client sends requests to a control socket. Each call opens a connection,
// sends one request, reads its reply and closes the connection; a Client
// holds no other state and may be used by several goroutines at once.
type Client struct {
	// Path is the control socket's path.
	Path string
}

// Upgrade asks the service to upgrade and waits for the result, or for ctx
// to end. On success it returns the result: the successor's PID and
// generation, the duration. A failed upgrade returns an [*Error]
// unwrapping to [ErrUpgradeFailed] whose Upgrade field says why (the
// service goes on serving); another upgrade running returns one unwrapping
// to [ErrInProgress], a refusal because too many older generations still
// drain one unwrapping to [ErrTooManyDraining]. The other errors are those
// of [Client.Do].
func (c *Client) Upgrade(ctx context.Context) (*UpgradeResult, error) {
	return c.upgrade(ctx, Request{V: Version, Op: OpUpgrade})
}

func (c *Client) upgrade(ctx context.Context, req Request) (*UpgradeResult, error) {
	return c.result(ctx, req, func(rep *Reply) *UpgradeResult { return rep.Upgrade })
}

// result sends req and returns the result of which picks from its
// reply: the errors of Do, the reply's as an [*Error], or a protocol
// error for a reply without one.
func (c *Client) result(ctx context.Context, req Request, which func(*Reply) *UpgradeResult) (*UpgradeResult, error) {
	rep, err := c.DoRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := rep.Err(); err != nil {
		return nil, err
	}
	r := which(rep)
	if r == nil {
		return nil, fmt.Errorf("%w: %s reply without a result", ErrProtocol, req.Op)
	}
	return r, nil
}

// Check asks the service to run the pre-flight check of the binary an
// upgrade would start now, without upgrading, and returns its result. A
// failed check returns an [*Error] unwrapping to [ErrCheckFailed] whose
// Check field has the check's output. The other errors are those of
// [Client.Do].
func (c *Client) Check(ctx context.Context) (*UpgradeResult, error) {
	return c.result(ctx, Request{V: Version, Op: OpCheck}, func(rep *Reply) *UpgradeResult { return rep.Check })
}

// UpgradeIfGeneration is [Client.Upgrade] on a condition: the service
// upgrades only if generation n serves. Otherwise nothing is started and
// it returns an [*Error] unwrapping to [ErrGenerationChanged], whose
// message names the serving generation. A server that does not know
// conditions refuses the request ([ErrProtocol]) rather than ignoring it.
func (c *Client) UpgradeIfGeneration(ctx context.Context, n uint64) (*UpgradeResult, error) {
	if n == 0 {
		return nil, errors.New("control: UpgradeIfGeneration: generation 0 does not exist (the first is 1)")
	}
	return c.upgrade(ctx, Request{V: Version, Op: OpUpgrade, IfGeneration: n})
}

// Stop asks the service to stop gracefully. It returns nil once the
// service acknowledged, before it has drained and exited. The errors are
// those of [Client.Do], and an [*Error] for a reply that is not [CodeOK].
func (c *Client) Stop(ctx context.Context) error {
	rep, err := c.Do(ctx, OpStop)
	if err != nil {
		return err
	}
	return rep.Err()
}

// Status asks the serving generation for its status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	rep, err := c.Do(ctx, OpStatus)
	if err != nil {
		return nil, err
	}
	if err := rep.Err(); err != nil {
		return nil, err
	}
	if rep.Status == nil {
		return nil, fmt.Errorf("%w: status reply without a status", ErrProtocol)
	}
	return rep.Status, nil
}

// Do sends the request op ([OpUpgrade], [OpStop] or [OpStatus]) and returns
// the reply, whatever its code: use [Reply.Err] to turn it into an error.
// A reply with [CodeReplaced] (a generation that had just handed over
// answered) is not returned: the request is sent again on a new
// connection, which reaches the successor, up to 50 times.
//
// Do fails without a reply with [ErrUnreachable] (no socket file, or
// nothing accepts on it), [ErrPermissionDenied] (the file's permissions),
// [ErrUnavailable] (the socket's queue stayed full for about two seconds,
// as for a hung service), [ErrNoReply] (ctx ended
// or the connection was lost before the reply: the outcome is unknown;
// when ctx ended the error also matches its error) or [ErrProtocol] (the
// reply could not be read).
func (c *Client) Do(ctx context.Context, op Op) (*Reply, error) {
	return c.DoRequest(ctx, Request{V: Version, Op: op})
}

// DoRequest is [Client.Do] with the whole request, for one that carries a
// condition ([Request.IfGeneration]). req.V should be [Version].
func (c *Client) DoRequest(ctx context.Context, req Request) (*Reply, error) {
	op := req.Op
	for attempt := 1; ; attempt++ {
		rep, err := c.roundTrip(ctx, req)
		if err != nil {
			return nil, err
		}
		if rep.Code != CodeReplaced || attempt == maxAttempts {
			return rep, nil
		}
		t := time.NewTimer(time.Duration(min(attempt, 10)) * 10 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %s: %w", ErrNoReply, op, context.Cause(ctx))
		}
	}
}

// roundTrip sends one request on a new connection and reads its reply.
func (c *Client) roundTrip(ctx context.Context, req Request) (*Reply, error) {
	op := req.Op
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, dialError(ctx, op, err)
	}
	defer conn.Close()
	// ctx's end interrupts the exchange (and ctx.Err is set by then).
	defer context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })()

	// A refusal is written before the request is read: read the reply
	// even if the request could not be written.
	_, werr := conn.Write(encodeLine(req))
	line, rerr := bufio.NewReader(io.LimitReader(conn, maxReplySize)).ReadBytes('\n')
	if rerr != nil && (!errors.Is(rerr, io.EOF) || len(line) == 0) {
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w: %s: %w", ErrNoReply, op, context.Cause(ctx))
		case werr != nil:
			rerr = werr
		case errors.Is(rerr, io.EOF):
			rerr = errors.New("connection closed before the reply")
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrNoReply, op, rerr)
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		return nil, fmt.Errorf("%w: %s: malformed reply: %s", ErrProtocol, op, jsonProblem(err))
	}
	if rep.V != Version && rep.Code != CodeBadVersion {
		return nil, fmt.Errorf("%w: %s: the server speaks protocol version %d, this client %d", ErrProtocol, op, rep.V, Version)
	}
	if rep.Code == "" {
		return nil, fmt.Errorf("%w: %s: reply without a code", ErrProtocol, op)
	}
	if rep.Op == "" {
		rep.Op = op
	}
	return &rep, nil
}

// dial connects to the socket. A full accept queue is waited out, within
// maxDialAttempts: the server empties it as fast as connections come, and
// refuses the peers it does not serve without holding them.
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	pause := time.Millisecond
	for attempt := 1; ; attempt++ {
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", c.Path)
		if err == nil || !errors.Is(err, syscall.EAGAIN) || attempt == maxDialAttempts {
			return conn, err
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// dialError classifies a failed connect. The error names the path.
func dialError(ctx context.Context, op Op, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %s: %w", ErrNoReply, op, context.Cause(ctx))
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %w", ErrPermissionDenied, err)
	case errors.Is(err, syscall.EAGAIN):
		return fmt.Errorf("%w: the socket's queue is full (is the service hung?): %w", ErrUnavailable, err)
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}

// Err returns nil for a reply with [CodeOK], and an [*Error] describing it
// otherwise.
func (r *Reply) Err() error {
	if r.Code == CodeOK {
		return nil
	}
	e := &Error{Op: r.Op, Code: r.Code, Message: r.Error}
	if e.Message == "" {
		e.Message = string(r.Code)
	}
	switch r.Code {
	case CodeFailed:
		e.Upgrade = r.Upgrade
	case CodeCheckFailed:
		e.Check = r.Check
	}
	return e
}
