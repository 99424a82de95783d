package integration

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// memcachedProc is a memcached process of the test's own.
type memcachedProc struct {
	t    *testing.T
	port int
	cmd  *exec.Cmd
}

// Addr is host:port.
func (m *memcachedProc) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

// startMemcached starts memcached on a free 127.0.0.1 port. A missing binary
// fails the test with how to install it: never a silent skip.
func startMemcached(t *testing.T) *memcachedProc {
	t.Helper()
	if _, err := exec.LookPath("memcached"); err != nil {
		t.Fatal("memcached not found: install it with `apt-get install -y memcached` (make test does)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	m := &memcachedProc{t: t, port: port}
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

// Start (re)starts memcached on its port and waits until it accepts.
func (m *memcachedProc) Start() {
	m.t.Helper()
	m.cmd = exec.Command("memcached", "-p", strconv.Itoa(m.port), "-l", "127.0.0.1", "-U", "0", "-m", "64", "-u", "root")
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", m.Addr(), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.t.Fatalf("memcached on %s did not start", m.Addr())
}

// Stop kills memcached.
func (m *memcachedProc) Stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
	m.cmd = nil
}

func memcachedYAML(addrs ...string) string {
	s := "cache:\n  memcached: ["
	for i, a := range addrs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q", a)
	}
	return s + "]\n  timeout: 100ms\n"
}
