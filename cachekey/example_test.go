package cachekey_test

import (
	"fmt"

	"switchyard/cachekey"
)

func ExampleDerive() {
	a := []byte(`{"model":"llama-3.3-70b","messages":[{"role":"user","content":"Hi"}],"temperature":0.7}`)
	// Same request: other key order, whitespace, escapes, number spelling,
	// and a dropped transport field.
	b := []byte(`{ "stream": true, "temperature": 7e-1,
	  "messages": [ { "content": "\u0048i", "role": "user" } ],
	  "model": "llama-3.3-70b" }`)
	// Different request: another temperature.
	c := []byte(`{"model":"llama-3.3-70b","messages":[{"role":"user","content":"Hi"}],"temperature":0.8}`)

	ka, _ := cachekey.Derive("switchyard", a)
	kb, _ := cachekey.Derive("switchyard", b)
	kc, _ := cachekey.Derive("switchyard", c)
	fmt.Println(ka)
	fmt.Println(ka == kb, ka == kc)

	_, err := cachekey.Derive("switchyard", []byte(`{"model":"m",}`))
	fmt.Println(err)
	// Output:
	// switchyard:v1:81c9d5f228cd79b6b2486469f0bb47b87232f84fba3b7bc2c2f41b7ea81b3b01
	// true false
	// cachekey: invalid JSON: expected string object key at offset 13
}

func ExampleFromText() {
	fmt.Println(cachekey.FromText("switchyard", "weekly report, v2"))
	fmt.Println(len(cachekey.FromText("switchyard", "any text\x00 at all ✓")))
	// Output:
	// switchyard:v1:46c58ede6a95a5be10095b67f3d5017e5e0cdd04ba305a92c87562d836d6e5c0
	// 78
}

func ExampleCanonicalize() {
	out, err := cachekey.Canonicalize(nil, []byte(`{"b": [1.50, 1e3, -0], "a": "caf\u00e9 \/"}`))
	fmt.Println(string(out), err)
	// Output:
	// {"a":"café /","b":[1.5,1000,0]} <nil>
}
