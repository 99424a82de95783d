package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Entry is one stored answer. The same entry answers plain and streaming
// requests: see openai.StreamToCompletion and openai.CompletionToStream.
type Entry struct {
	// Stream reports that Body is the raw SSE byte stream as the upstream
	// sent it (ending with "data: [DONE]"); otherwise Body is a
	// chat.completion JSON object.
	Stream bool
	// Body is the answer's bytes.
	Body []byte
	// ContentType is the upstream's Content-Type header.
	ContentType string
	// Upstream names the upstream that served the answer (informational).
	Upstream string
	// StoredAt is when the answer was stored, for the Age header.
	StoredAt time.Time
}

// Entry encoding, version 1:
//
//	magic     1 byte  entryMagic
//	version   1 byte  entryVersion
//	flags     1 byte  flagStream | flagZstd
//	stored    varint  StoredAt Unix seconds, then uvarint nanoseconds
//	ctype     uvarint length, bytes
//	upstream  uvarint length, bytes
//	body      uvarint length, bytes; with flagZstd: uvarint decoded length,
//	          then uvarint length, zstd frame
//
// Nothing may follow the body.
const (
	entryMagic   = 0xE7
	entryVersion = 1

	flagStream = 1 << 0
	flagZstd   = 1 << 1
	knownFlags = flagStream | flagZstd

	// compressAbove is the body size above which compression is tried.
	compressAbove = 64 << 10
	// maxDecodedBody caps a compressed body's decoded size, so corrupt or
	// hostile data cannot make DecodeEntry allocate without bound.
	maxDecodedBody = 64 << 20
)

var errCorruptEntry = errors.New("cache: corrupt entry")

// The zstd encoder and decoder are safe for concurrent EncodeAll/DecodeAll
// calls and keep their own pools of state; they are built on first use.
var (
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(0))
		if err != nil {
			panic("BUG: zstd encoder: " + err.Error())
		}
		return enc
	})
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxDecodedBody))
		if err != nil {
			panic("BUG: zstd decoder: " + err.Error())
		}
		return dec
	})
)

// EncodeEntry appends the binary encoding of e to dst and returns the
// extended slice. A Body over 64 KiB is zstd-compressed when that makes it
// smaller. The encoding starts with a magic byte and a version, so a
// format change is detected by DecodeEntry.
func EncodeEntry(dst []byte, e Entry) []byte {
	var flags byte
	if e.Stream {
		flags |= flagStream
	}
	body := e.Body
	if len(body) > compressAbove && len(body) <= maxDecodedBody {
		if z := zstdEncoder().EncodeAll(body, nil); len(z) < len(body) {
			flags |= flagZstd
			body = z
		}
	}
	dst = append(dst, entryMagic, entryVersion, flags)
	dst = binary.AppendVarint(dst, e.StoredAt.Unix())
	dst = binary.AppendUvarint(dst, uint64(e.StoredAt.Nanosecond()))
	dst = appendBytes(dst, e.ContentType)
	dst = appendBytes(dst, e.Upstream)
	if flags&flagZstd != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(e.Body)))
	}
	return appendBytes(dst, body)
}

func appendBytes[T string | []byte](dst []byte, b T) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// DecodeEntry decodes an entry made by EncodeEntry. Corrupt, truncated or
// trailing data, an unknown version or unknown flags give an error. An
// uncompressed Body aliases b; a compressed one is freshly allocated.
// StoredAt is in the local time zone.
func DecodeEntry(b []byte) (Entry, error) {
	var e Entry
	if len(b) < 3 || b[0] != entryMagic {
		return e, fmt.Errorf("%w: bad magic", errCorruptEntry)
	}
	if b[1] != entryVersion {
		return e, fmt.Errorf("%w: unknown version %d", errCorruptEntry, b[1])
	}
	flags := b[2]
	if flags&^knownFlags != 0 {
		return e, fmt.Errorf("%w: unknown flags %#x", errCorruptEntry, flags)
	}
	d := decoder{b: b[3:]}
	secs := d.varint()
	nsec := d.uvarint()
	ctype := d.bytes()
	upstream := d.bytes()
	var rawLen uint64
	if flags&flagZstd != 0 {
		rawLen = d.uvarint()
	}
	body := d.bytes()
	if d.err != nil {
		return Entry{}, d.err
	}
	if len(d.b) != 0 {
		return Entry{}, fmt.Errorf("%w: %d trailing bytes", errCorruptEntry, len(d.b))
	}
	if nsec >= 1e9 {
		return Entry{}, fmt.Errorf("%w: bad timestamp", errCorruptEntry)
	}
	if flags&flagZstd != 0 {
		if rawLen > maxDecodedBody {
			return Entry{}, fmt.Errorf("%w: body of %d bytes exceeds %d", errCorruptEntry, rawLen, maxDecodedBody)
		}
		// Start with a buffer sized by the compressed length: a corrupt
		// rawLen must not cost a large allocation by itself.
		buf := make([]byte, 0, min(rawLen, uint64(len(body))*8+512))
		raw, err := zstdDecoder().DecodeAll(body, buf)
		if err != nil {
			return Entry{}, fmt.Errorf("%w: body: %w", errCorruptEntry, err)
		}
		if uint64(len(raw)) != rawLen {
			return Entry{}, fmt.Errorf("%w: body decoded to %d bytes, want %d", errCorruptEntry, len(raw), rawLen)
		}
		body = raw
	}
	e.Stream = flags&flagStream != 0
	e.Body = body
	e.ContentType = string(ctype)
	e.Upstream = string(upstream)
	e.StoredAt = time.Unix(secs, int64(nsec))
	return e, nil
}

// decoder reads the entry's fields; the first error sticks and later reads
// return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: truncated", errCorruptEntry)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: truncated", errCorruptEntry)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: truncated", errCorruptEntry)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}
