package sockdiag

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestPeerOfSameProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sock_diag is Linux only")
	}
	for _, addr := range []string{"127.0.0.1:0", "127.240.0.9:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skipf("cannot listen on %s: %v", addr, err)
			}
			defer ln.Close()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := PeerOf(s)
			if err != nil {
				t.Fatalf("PeerOf: %v", err)
			}
			if got.UID != uint32(os.Geteuid()) || got.State != 1 || got.Inode == 0 {
				t.Fatalf("got %+v, want uid %d, established, an inode", got, os.Geteuid())
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sock_diag is Linux only")
	}
	ln := listen(t, "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	_, err := LookupTCP(netip.MustParseAddrPort("127.0.0.1:1"), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

// TestPeerOfOtherUser runs a client as nobody in a child process and checks
// that the accepted connection is attributed to nobody's uid.
func TestPeerOfOtherUser(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sock_diag is Linux only")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as another user")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("needs bash for its /dev/tcp client")
	}
	const nobody = 65534
	ln := listen(t, "127.240.0.10:0")
	port := ln.Addr().(*net.TCPAddr).Port
	// The child connects, then waits for one line from the server, so its
	// socket stays open until the lookup is done.
	cmd := exec.Command(bash, "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.240.0.10/%d && read -r line <&3 && echo got:$line", port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		t.Fatalf("child did not connect: %v", err)
	}
	defer s.Close()
	got, err := PeerOf(s)
	if err != nil {
		t.Fatalf("PeerOf: %v", err)
	}
	if got.UID != nobody {
		t.Fatalf("uid = %d, want %d (nobody)", got.UID, nobody)
	}
	fmt.Fprintln(s, "done")
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "got:done\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
}

func TestParseReplyMalformed(t *testing.T) {
	req, err := buildRequest(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2"), 9)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrNotFound},
		{"length too big", append([]byte{0xff, 0xff, 0, 0}, make([]byte, 12)...), ErrBadReply},
		{"length too small", append([]byte{4, 0, 0, 0}, make([]byte, 12)...), ErrBadReply},
		// The request itself is not an answer: its type is right but it is
		// too short to be an inet_diag_msg.
		{"short diag msg", req, ErrBadReply},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseReply(tc.in, 9); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := buildRequest(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("[::1]:2"), 1); err == nil {
		t.Error("mixed families must be refused")
	}
}

func FuzzParseReply(f *testing.F) {
	req, _ := buildRequest(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2"), 1)
	f.Add(req)
	f.Add(make([]byte, 88))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseReply(b, 1) // must not panic
	})
}
