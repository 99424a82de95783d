// Package upload holds a client's multipart upload (an audio file and its
// form fields) for the length of one request. It reads the form once, from
// the client's body as it arrives, into a spool: memory up to a small
// limit, then a temporary file unlinked as soon as it is created, so it
// never outlives the process holding it. Each upstream attempt replays the
// spool, byte for byte but for one field's value that may be replaced (the
// model alias), so a failed attempt can fail over.
//
// A Pool bounds the memory and the bytes that all spools hold at once.
// Nothing here knows HTTP or the OpenAI API: the proxy hands in the body
// stream and the boundary, and reads the parts.
package upload

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// Sentinel errors of Pool.Read.
var (
	// ErrTooLarge: the body is larger than the limit it was read with.
	ErrTooLarge = errors.New("upload larger than the limit")
	// ErrFull: holding the upload would take the pool over its MaxBytes.
	ErrFull = errors.New("upload spool full")
)

// Default pool bounds (PoolOptions' zero values).
const (
	// DefaultMemPerSpool is how much of one upload is held in memory
	// before it spills to a file: short clips never touch the disk.
	DefaultMemPerSpool = 1 << 20
	// DefaultMemTotal bounds the memory all spools hold at once; a spool
	// that finds it used up goes to a file from its first byte.
	DefaultMemTotal = 32 << 20
)

// PoolOptions configures a Pool.
type PoolOptions struct {
	// Dir is where spool files are created. Default "": os.TempDir()
	// ($TMPDIR, else /tmp). Files are unlinked at creation (on systems
	// that allow it), so a crash leaves nothing behind.
	Dir string
	// MemPerSpool is how many bytes of one upload are held in memory
	// before the upload spills to a file. Default DefaultMemPerSpool;
	// negative: every upload goes to a file.
	MemPerSpool int64
	// MemTotal bounds the bytes all spools hold in memory. Default
	// DefaultMemTotal.
	MemTotal int64
	// MaxBytes bounds the bytes all spools hold, memory and files
	// together; an upload that would go over it fails with ErrFull.
	// 0 (the default) means no bound. SetMaxBytes changes it.
	MaxBytes int64
	// OnHeld, when set, is told each change of the bytes all spools hold
	// (for a gauge). It must be cheap and safe for concurrent use.
	OnHeld func(delta int64)
}

// Pool bounds the uploads held at once and creates their spools. It is
// safe for concurrent use.
type Pool struct {
	dir         string
	memPerSpool int64
	memTotal    int64
	maxBytes    atomic.Int64
	mem         atomic.Int64 // bytes reserved for spools' memory
	held        atomic.Int64 // bytes held by spools, memory and files
	spilled     atomic.Int64 // spools that went to a file, ever
	onHeld      func(int64)
}

// NewPool returns a Pool with o's bounds.
func NewPool(o PoolOptions) *Pool {
	p := &Pool{dir: o.Dir, memPerSpool: o.MemPerSpool, memTotal: o.MemTotal, onHeld: o.OnHeld}
	if p.onHeld == nil {
		p.onHeld = func(int64) {}
	}
	if p.memPerSpool == 0 {
		p.memPerSpool = DefaultMemPerSpool
	}
	if p.memPerSpool < 0 {
		p.memPerSpool = 0
	}
	if p.memTotal <= 0 {
		p.memTotal = DefaultMemTotal
	}
	p.maxBytes.Store(o.MaxBytes)
	return p
}

// SetMaxBytes changes the bound on the bytes all spools hold (0: none).
// Spools already holding more keep what they have.
func (p *Pool) SetMaxBytes(n int64) { p.maxBytes.Store(n) }

// Held returns the bytes all spools hold now, memory and files.
func (p *Pool) Held() int64 { return p.held.Load() }

// Spilled returns how many uploads have gone to a file since the pool was
// made.
func (p *Pool) Spilled() int64 { return p.spilled.Load() }

// reserve takes n bytes of the pool's bound, or fails with ErrFull.
func (p *Pool) reserve(n int64) error {
	if v := p.held.Add(n); p.maxBytes.Load() > 0 && v > p.maxBytes.Load() {
		p.held.Add(-n)
		return ErrFull
	}
	p.onHeld(n)
	return nil
}

// copyBufs are the write buffers of spools writing to a file.
var copyBufs = sync.Pool{New: func() any { return new([64 << 10]byte) }}

// spool is one upload's bytes: in mem until they outgrow memCap, then in
// an unlinked temp file written through wbuf. Writes come first (one
// goroutine), then any number of ReadAt calls; close releases everything.
type spool struct {
	pool   *Pool
	mem    []byte
	memCap int64 // memory reserved from the pool for mem
	f      *os.File
	name   string // the file's name when it could not be unlinked at once
	wbuf   *[64 << 10]byte
	wn     int   // bytes in wbuf
	size   int64 // bytes written
	closed bool
}

// newSpool returns an empty spool; hint is the expected size (-1: unknown).
func (p *Pool) newSpool(hint int64) *spool {
	s := &spool{pool: p}
	want := p.memPerSpool
	if hint >= 0 && hint < want {
		want = hint
	}
	if want > 0 {
		if p.mem.Add(want) <= p.memTotal {
			s.memCap = want
		} else {
			p.mem.Add(-want)
		}
	}
	return s
}

// Write appends b, spilling to a file when memory is used up.
func (s *spool) Write(b []byte) (int, error) {
	if err := s.pool.reserve(int64(len(b))); err != nil {
		return 0, err
	}
	s.size += int64(len(b))
	if s.f == nil && int64(len(s.mem)+len(b)) <= s.memCap {
		if need := len(s.mem) + len(b); need > cap(s.mem) {
			// Doubling up to the reservation: a small upload of unknown
			// length does not take the whole of it.
			nb := make([]byte, len(s.mem), min(s.memCap, int64(max(2*cap(s.mem), need, 16<<10))))
			copy(nb, s.mem)
			s.mem = nb
		}
		s.mem = append(s.mem, b...)
		return len(b), nil
	}
	if s.f == nil {
		if err := s.spill(); err != nil {
			return 0, err
		}
	}
	for n := 0; n < len(b); {
		if s.wn == len(s.wbuf) {
			if err := s.flush(); err != nil {
				return n, err
			}
		}
		c := copy(s.wbuf[s.wn:], b[n:])
		s.wn += c
		n += c
	}
	return len(b), nil
}

// spill moves the spool to a new temp file, with what memory held.
func (s *spool) spill() error {
	f, err := os.CreateTemp(s.pool.dir, "switchyard-upload-*")
	if err != nil {
		return fmt.Errorf("creating the spool file: %w", err)
	}
	if os.Remove(f.Name()) != nil { // not on this system: removed by close
		s.name = f.Name()
	}
	s.f = f
	s.pool.spilled.Add(1)
	s.wbuf = copyBufs.Get().(*[64 << 10]byte)
	if len(s.mem) > 0 {
		if _, err := f.Write(s.mem); err != nil {
			return fmt.Errorf("writing the spool file: %w", err)
		}
	}
	s.mem = nil
	s.pool.mem.Add(-s.memCap)
	s.memCap = 0
	return nil
}

// flush writes the buffered bytes to the file.
func (s *spool) flush() error {
	if s.wn == 0 {
		return nil
	}
	_, err := s.f.Write(s.wbuf[:s.wn])
	s.wn = 0
	if err != nil {
		return fmt.Errorf("writing the spool file: %w", err)
	}
	return nil
}

// finish ends the writes: the file is flushed and the write buffer goes
// back to its pool.
func (s *spool) finish() error {
	if s.f == nil || s.wbuf == nil {
		return nil
	}
	err := s.flush()
	copyBufs.Put(s.wbuf)
	s.wbuf = nil
	return err
}

// ReadAt reads the spool at off (after finish).
func (s *spool) ReadAt(b []byte, off int64) (int, error) {
	if s.f != nil {
		return s.f.ReadAt(b, off)
	}
	if off >= int64(len(s.mem)) {
		return 0, io.EOF
	}
	n := copy(b, s.mem[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// close releases the memory, the file and the pool's reservations. It
// may be called more than once.
func (s *spool) close() {
	if s.closed {
		return
	}
	s.closed = true
	if s.wbuf != nil {
		copyBufs.Put(s.wbuf)
		s.wbuf = nil
	}
	if s.f != nil {
		_ = s.f.Close()
		if s.name != "" {
			_ = os.Remove(s.name)
		}
	}
	s.mem = nil
	s.pool.mem.Add(-s.memCap)
	s.pool.held.Add(-s.size)
	s.pool.onHeld(-s.size)
}
