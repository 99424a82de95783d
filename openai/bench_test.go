package openai_test

import (
	"bytes"
	"strings"
	"testing"

	"switchyard/openai"
)

// benchBody1KB is a ~1 KB chat request whose model comes first and whose
// messages hold escaped quotes, so the scanner has strings to skip.
func benchBody1KB() []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"llama-3.3-70b","messages":[`)
	for i := 0; b.Len() < 900; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"role":"user","content":"Say \"hi\" to the benchmark, then count to ten: one two three four five."}`)
	}
	b.WriteString(`],"temperature":0.2,"stream":false}`)
	return b.Bytes()
}

// BenchmarkRewriteModel1KB maps an alias to the upstream's model name: one
// copy of the body.
func BenchmarkRewriteModel1KB(b *testing.B) {
	body := benchBody1KB()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		out, err := openai.RewriteModel(body, "llama-3.3-70b-versatile")
		if err != nil || len(out) <= len(body) {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewriteModel1KBUnchanged is the pass-through case (the model is
// sent as the client named it): no copy.
func BenchmarkRewriteModel1KBUnchanged(b *testing.B) {
	body := benchBody1KB()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		out, err := openai.RewriteModel(body, "llama-3.3-70b")
		if err != nil || len(out) != len(body) {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewriteModel1KBModelLast puts "model" after the messages, so the
// whole body is scanned.
func BenchmarkRewriteModel1KBModelLast(b *testing.B) {
	body := benchBody1KB()
	body = []byte(`{` + strings.TrimPrefix(string(body[:len(body)-1]), `{"model":"llama-3.3-70b",`) + `,"model":"llama-3.3-70b"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := openai.RewriteModel(body, "llama-3.3-70b-versatile"); err != nil {
			b.Fatal(err)
		}
	}
}
