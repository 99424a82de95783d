package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

func sampleEntries(t testing.TB) map[string]Entry {
	t.Helper()
	sse, err := os.ReadFile("testdata/groq_stream.sse")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 100<<10)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	return map[string]Entry{
		"zero": {},
		"plain": {
			Body:        []byte(`{"id":"chatcmpl-1","object":"chat.completion","choices":[]}`),
			ContentType: "application/json",
			Upstream:    "groq",
			StoredAt:    time.Unix(1732627200, 123456789),
		},
		"stream": {
			Stream:      true,
			Body:        sse,
			ContentType: "text/event-stream; charset=utf-8",
			Upstream:    "huggingface",
			StoredAt:    time.Unix(1732627201, 0),
		},
		"pre-1970": {Body: []byte("x"), StoredAt: time.Date(1969, 7, 20, 20, 17, 40, 5, time.UTC)},
		"compressible": {
			Stream:   true,
			Body:     bytes.Repeat(sse, 200), // ~480 KiB
			Upstream: "openai",
			StoredAt: time.Unix(1732627202, 1),
		},
		"incompressible": {Body: random, StoredAt: time.Unix(1, 0)},
		"at threshold":   {Body: bytes.Repeat([]byte("a"), compressAbove)},
	}
}

func equalEntry(a, b Entry) bool {
	return a.Stream == b.Stream && bytes.Equal(a.Body, b.Body) && a.ContentType == b.ContentType &&
		a.Upstream == b.Upstream && a.StoredAt.Equal(b.StoredAt)
}

func TestEntryRoundTrip(t *testing.T) {
	for name, e := range sampleEntries(t) {
		t.Run(name, func(t *testing.T) {
			enc := EncodeEntry(nil, e)
			got, err := DecodeEntry(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !equalEntry(got, e) {
				t.Fatalf("round trip changed the entry:\n got %+v\nwant %+v", got, e)
			}
			compressed := enc[2]&flagZstd != 0
			switch name {
			case "compressible":
				if !compressed || len(enc) > len(e.Body)/10 {
					t.Fatalf("body of %d bytes encoded to %d bytes, compressed=%v", len(e.Body), len(enc), compressed)
				}
			default: // small, at the threshold, or incompressible
				if compressed {
					t.Fatalf("body of %d bytes should be stored raw", len(e.Body))
				}
			}
		})
	}
}

func TestEncodeEntryAppends(t *testing.T) {
	e := sampleEntries(t)["plain"]
	prefix := []byte("prefix")
	enc := EncodeEntry(prefix, e)
	if !bytes.HasPrefix(enc, []byte("prefix")) {
		t.Fatalf("EncodeEntry dropped dst: %q", enc)
	}
	if _, err := DecodeEntry(enc[len(prefix):]); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeEntryCorrupt(t *testing.T) {
	entries := sampleEntries(t)
	plain := EncodeEntry(nil, entries["plain"])
	big := EncodeEntry(nil, entries["compressible"])
	with := func(b []byte, i int, v byte) []byte {
		c := bytes.Clone(b)
		c[i] = v
		return c
	}
	// A hand-made compressed entry whose declared size disagrees with the frame.
	mkZstd := func(declared uint64, frame []byte) []byte {
		b := []byte{entryMagic, entryVersion, flagZstd, 0, 0, 0, 0}
		b = binary.AppendUvarint(b, declared)
		return appendBytes(b, frame)
	}
	frame := zstdEncoder().EncodeAll([]byte("hello, world"), nil)
	if _, err := DecodeEntry(mkZstd(12, frame)); err != nil {
		t.Fatalf("well-formed hand-made entry: %v", err)
	}
	tests := map[string][]byte{
		"empty":               nil,
		"magic only":          {entryMagic},
		"bad magic":           with(plain, 0, '{'),
		"future version":      with(plain, 1, entryVersion+1),
		"unknown flag":        with(plain, 2, 1<<7),
		"trailing byte":       append(bytes.Clone(plain), 0),
		"body length too big": append(bytes.Clone(plain[:len(plain)-len(entries["plain"].Body)-1]), 0x7f),
		"bad nanoseconds":     append(binary.AppendUvarint([]byte{entryMagic, entryVersion, 0, 0}, 1e9), 0, 0, 0),
		"zstd size mismatch":  mkZstd(13, frame),
		"zstd size over cap":  mkZstd(maxDecodedBody+1, frame),
		"zstd garbage":        mkZstd(12, []byte("definitely not zstd")),
		"zstd corrupt frame":  with(big, len(big)-20, big[len(big)-20]^0xff),
	}
	for n := range len(plain) {
		tests[fmt.Sprintf("plain truncated to %d", n)] = plain[:n]
	}
	for _, n := range []int{3, 10, len(big) / 2, len(big) - 1} {
		tests[fmt.Sprintf("compressed truncated to %d", n)] = big[:n]
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if e, err := DecodeEntry(b); err == nil {
				t.Fatalf("DecodeEntry accepted corrupt input, got %+v", e)
			} else if !errors.Is(err, errCorruptEntry) {
				t.Fatalf("error %v does not wrap errCorruptEntry", err)
			}
		})
	}
}

func FuzzDecodeEntry(f *testing.F) {
	for _, e := range sampleEntries(f) {
		if len(e.Body) > 4096 && len(EncodeEntry(nil, e)) > 16<<10 {
			continue // keep the corpus small; the compressible one stays (it encodes small)
		}
		f.Add(EncodeEntry(nil, e))
	}
	f.Add([]byte{entryMagic, entryVersion, flagZstd | flagStream, 0, 0, 0, 0, 12, 3, 'a', 'b', 'c'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEntry(b)
		if err != nil {
			return
		}
		again, err := DecodeEntry(EncodeEntry(nil, e))
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if !equalEntry(e, again) {
			t.Fatalf("re-encoding changed the entry: %+v vs %+v", e, again)
		}
	})
}

func BenchmarkEncodeEntryStream(b *testing.B) {
	e := sampleEntries(b)["stream"]
	var buf []byte
	for b.Loop() {
		buf = EncodeEntry(buf[:0], e)
	}
}
