package cachekey

import "testing"

func benchDerive(b *testing.B, size int) {
	body := chatBody(size)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := Derive("switchyard", body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDerive1KB measures a typical short chat request.
func BenchmarkDerive1KB(b *testing.B) { benchDerive(b, 1<<10) }

// BenchmarkDerive100KB measures a long conversation.
func BenchmarkDerive100KB(b *testing.B) { benchDerive(b, 100<<10) }

// BenchmarkAppendDerive1KB is the zero-allocation variant.
func BenchmarkAppendDerive1KB(b *testing.B) {
	body := chatBody(1 << 10)
	buf := make([]byte, 0, MaxKeyLen)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		buf, _ = AppendDerive(buf[:0], "switchyard", body)
	}
}

// BenchmarkCanonicalize100KB isolates canonicalization from hashing.
func BenchmarkCanonicalize100KB(b *testing.B) {
	body := chatBody(100 << 10)
	out := make([]byte, 0, 2*len(body))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		out, _ = Canonicalize(out[:0], body)
	}
}

// BenchmarkFromText measures a typical X-Cache-Key header.
func BenchmarkFromText(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		FromText("switchyard", "tenant-42/weekly-report/v2")
	}
}
