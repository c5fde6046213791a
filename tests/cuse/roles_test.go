package cusevm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/cuse"
	"github.com/fusegate/fusegate/cuse/sockdev"
)

// playRole runs one child process's part.
func playRole(role, arg string) error {
	switch role {
	case "reader":
		// Blocks in read(2) on the device until a signal ends the process.
		fd, err := unix.Open(arg, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		fmt.Println("reading")
		buf := make([]byte, 4096)
		n, err := unix.Read(fd, buf)
		if err != nil {
			return err
		}
		fmt.Printf("read %d\n", n)
		return nil
	case "open":
		fd, err := unix.Open(arg, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	case "driver":
		return runDriver(arg)
	}
	return fmt.Errorf("unknown role %q", role)
}

// Ioctls the test driver answers.
var (
	echoCmd = cuse.Ioc(cuse.IocRead|cuse.IocWrite, 'S', 1, 16) // reverses 16 bytes; result 16
	pidCmd  = cuse.Ioc(cuse.IocRead, 'S', 2, 4)                // the opener's pid
	valCmd  = cuse.Ioc(cuse.IocNone, 'S', 3, 0)                // returns arg+1
)

// runDriver is a userspace driver for the socket kind, as a user would
// write one: it greets each opener, upper-cases what it is sent and answers
// three ioctls.
func runDriver(path string) error {
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go serveDriverConn(c)
	}
}

func serveDriverConn(c net.Conn) {
	defer c.Close()
	f, err := sockdev.ReadFrame(c, nil)
	if err != nil || f.Type != sockdev.TypeOpen {
		fmt.Fprintf(os.Stderr, "driver: first frame %q: %v\n", f.Type, err)
		return
	}
	open, _ := sockdev.ParseOpen(f.Payload)
	send := func(typ byte, p []byte) bool {
		_, err := c.Write(sockdev.AppendFrame(nil, typ, p))
		return err == nil
	}
	send(sockdev.TypeData, []byte(fmt.Sprintf("hello uid=%d pid=%d\n", open.UID, open.PID)))
	for {
		f, err := sockdev.ReadFrame(c, nil)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "driver: %v\n", err)
			return
		}
		switch f.Type {
		case sockdev.TypeWrite:
			send(sockdev.TypeData, bytes.ToUpper(f.Payload))
		case sockdev.TypeIoctl:
			m, err := sockdev.ParseIoctl(f.Payload)
			if err != nil {
				return
			}
			r := sockdev.ReplyMsg{ID: m.ID}
			switch cuse.IoctlCmd(m.Cmd) {
			case echoCmd:
				out := make([]byte, len(m.Input))
				for i, b := range m.Input {
					out[len(out)-1-i] = b
				}
				r.Result, r.Output = int32(len(out)), out
			case pidCmd:
				r.Output = []byte{byte(open.PID), byte(open.PID >> 8), byte(open.PID >> 16), byte(open.PID >> 24)}
			case valCmd:
				r.Result = int32(m.Arg + 1)
			default:
				r.Result = -int32(syscall.ENOTTY)
			}
			send(sockdev.TypeReply, r.Bytes())
		}
	}
}
