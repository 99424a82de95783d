package upstream_test

import (
	"fmt"
	"time"

	"switchyard/upstream"
)

func ExampleParseReset() {
	for _, s := range []string{"2m59.56s", "7.66s", "12ms", "1.5", "abc"} {
		d, ok := upstream.ParseReset(s)
		fmt.Println(s, d, ok)
	}
	// Output:
	// 2m59.56s 2m59.56s true
	// 7.66s 7.66s true
	// 12ms 12ms true
	// 1.5 1.5s true
	// abc 0s false
}

func ExampleParseRetryAfter() {
	now := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	fmt.Println(upstream.ParseRetryAfter("1500", "2", now))
	fmt.Println(upstream.ParseRetryAfter("", "2", now))
	fmt.Println(upstream.ParseRetryAfter("", "Sat, 14 Mar 2026 12:00:30 GMT", now))
	// Output:
	// 1.5s true
	// 2s true
	// 30s true
}
