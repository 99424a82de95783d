package cache

import (
	"strconv"
	"strings"
	"testing"
)

func TestRequestScanner(t *testing.T) {
	set := func(key, value string) string {
		return "set " + key + " 0 60 " + strconv.Itoa(len(value)) + "\r\n" + value + "\r\n"
	}
	tests := []struct {
		name string
		wire string
		want string // verbs, space-separated
	}{
		{"get", "gets k\r\n", "gets"},
		{"multi-key get", "gets a b c\r\n", "gets"},
		{"set then get", set("k", "v") + "gets k\r\n", "set gets"},
		{"data that looks like commands", set("k", "gets x\r\ndelete y\r\nincr z 1\r\n") + "delete k\r\n", "set delete"},
		{"empty value", set("k", "") + "incr c 1\r\n", "set incr"},
		{"incr miss then add then incr", "incr c 5\r\nadd c 0 60 1\r\n5\r\nincr c 5\r\n", "incr add incr"},
		{"cas carries a data block", "cas k 0 0 3 42\r\nabc\r\ndecr c 1\r\n", "cas decr"},
		{"blank line", "\r\nversion\r\n", "version"},
		{"long multi-key line", "gets " + strings.Repeat("k ", 400) + "\r\nadd k 0 0 2\r\nab\r\n", "gets add"},
		{"incomplete line", "gets k", ""},
	}
	for _, tt := range tests {
		// Every way of cutting the stream into two writes, and one byte
		// at a time, gives the same requests.
		cuts := [][]string{{tt.wire}}
		for i := 1; i < len(tt.wire); i++ {
			cuts = append(cuts, []string{tt.wire[:i], tt.wire[i:]})
		}
		cuts = append(cuts, strings.Split(tt.wire, ""))
		for _, writes := range cuts {
			var s requestScanner
			var got []string
			for _, w := range writes {
				s.scan([]byte(w), func(verb []byte) { got = append(got, string(verb)) })
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("%s, written as %q: verbs %q, want %q", tt.name, writes, g, tt.want)
				break
			}
		}
	}
}
