package main

// Arrival stamps from the kernel. SES meters a request when it reaches SES, on machines that do not
// share the sender's cores. The stub shares them: a handler's time.Now() is the moment the Go
// scheduler got to the request, which on this 2-core machine was measured up to 41 ms after the
// socket write (16 ms at nice -10), enough to move a paced request into the next second. So each
// connection asks the kernel for receive timestamps (SO_TIMESTAMPNS) and a request is stamped with
// the kernel's receive time of its first byte. On the loopback interface that is the moment the
// sender's write handed the bytes to the network stack, whatever the stub's process was doing.
//
// A connection carries one request at a time (the sender's clients do not pipeline): the first
// byte read after a response was written, or after the connection opened, starts the next request.
// Where the kernel gives no stamp (another OS, a socket option refused) the read's own time.Now()
// stands in, and /_stub/stats counts how many stamps were the kernel's.

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

type connKey struct{}

// stampListener turns receive timestamps on for the listening socket, before any connection
// exists: the kernel stamps packets only while some socket asks for it, and accepted sockets
// inherit the option, so bytes that arrive before the stub accepts their connection are stamped
// too.
func stampListener(l net.Listener) {
	if tcp, ok := l.(*net.TCPListener); ok {
		if raw, err := tcp.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
			})
		}
	}
}

// stampedListener hands out connections that stamp each request's first byte.
type stampedListener struct {
	net.Listener
	kernelStamps, clockStamps *atomic.Int64
}

func (l stampedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return c, nil
	}
	sc := &stampedConn{TCPConn: tcp, raw: raw, kernelStamps: l.kernelStamps, clockStamps: l.clockStamps}
	sc.fresh.Store(true)
	_ = raw.Control(func(fd uintptr) {
		sc.kernel = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1) == nil
	})
	return sc, nil
}

// stampedConn reads with recvmsg so that the kernel's receive timestamp comes with the bytes.
type stampedConn struct {
	*net.TCPConn
	raw                       syscall.RawConn
	kernel                    bool
	fresh                     atomic.Bool  // the next byte read starts a request
	stamp                     atomic.Int64 // unix nanoseconds of the current request's first byte
	oob                       [64]byte
	kernelStamps, clockStamps *atomic.Int64
}

func (c *stampedConn) Read(p []byte) (int, error) {
	if !c.kernel || len(p) == 0 {
		n, err := c.TCPConn.Read(p)
		if n > 0 && c.fresh.CompareAndSwap(true, false) {
			c.stamp.Store(time.Now().UnixNano())
			c.clockStamps.Add(1)
		}
		return n, err
	}
	var n, oobn int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = syscall.Recvmsg(int(fd), p, c.oob[:], 0)
		return rerr != syscall.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	if c.fresh.CompareAndSwap(true, false) {
		if at, ok := kernelStamp(c.oob[:oobn]); ok {
			c.stamp.Store(at)
			c.kernelStamps.Add(1)
		} else {
			c.stamp.Store(time.Now().UnixNano())
			c.clockStamps.Add(1)
		}
	}
	return n, nil
}

// Write sends (part of) a response; whatever is read after it belongs to the next request. The flag
// is set before the bytes leave, so the client cannot answer before the connection expects it.
func (c *stampedConn) Write(p []byte) (int, error) {
	c.fresh.Store(true)
	return c.TCPConn.Write(p)
}

// kernelStamp finds SCM_TIMESTAMPNS in a recvmsg's control data (a struct timespec).
func kernelStamp(oob []byte) (int64, bool) {
	messages, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range messages {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_TIMESTAMPNS &&
			len(m.Data) >= int(unsafe.Sizeof(syscall.Timespec{})) {
			ts := (*syscall.Timespec)(unsafe.Pointer(&m.Data[0]))
			return ts.Nano(), true
		}
	}
	return 0, false
}

// withConn puts the request's connection into its context (http.Server.ConnContext).
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// arrivalOf is when the request's first byte arrived, or now for a request that did not come
// through a stamped connection (the handler tests' recorder).
func arrivalOf(ctx context.Context) time.Time {
	if c, ok := ctx.Value(connKey{}).(*stampedConn); ok {
		if at := c.stamp.Load(); at != 0 {
			return time.Unix(0, at)
		}
	}
	return time.Now()
}
