package server

import (
	"net"
	"syscall"
)

// setCork sets TCP_CORK on a TCP connection; anything else is left as it
// is. Failing costs only efficiency, so errors are ignored.
func setCork(c net.Conn, on bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	v := 0
	if on {
		v = 1
	}
	rc.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, v)
	})
}
