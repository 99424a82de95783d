package sse_test

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"switchyard/sse"
)

func ExampleReader() {
	stream := ": keep-alive\n\n" +
		"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n" +
		"data: [DONE]\n" // the server closed without the final blank line
	r := sse.NewReader(strings.NewReader(stream), 0)
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		data, ok := sse.Data(ev)
		switch {
		case !ok:
			fmt.Printf("no data: %q\n", ev)
		case sse.IsDone(data):
			fmt.Printf("done: %q\n", ev)
		default:
			fmt.Printf("data: %s\n", data)
		}
	}
	// Output:
	// no data: ": keep-alive\n\n"
	// data: {"choices":[{"delta":{"content":"Hi"}}]}
	// done: "data: [DONE]\n\n"
}

func ExampleData() {
	data, ok := sse.Data([]byte("event: message\ndata: first\ndata:second\n\n"))
	fmt.Printf("%q %v\n", data, ok)
	// Output:
	// "first\nsecond" true
}
