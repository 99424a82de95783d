package upload

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"slices"
)

// Bounds on a form's shape. An audio upload has one file and a handful of
// short fields; anything far past these is not one.
const (
	// MaxParts is the most parts a form may have.
	MaxParts = 256
	// MaxFieldBytes is the longest value a field (a part without a file)
	// may have; fields are held in memory.
	MaxFieldBytes = 64 << 10
	// MaxHeaderBytes is the longest header block a part may have.
	MaxHeaderBytes = 16 << 10
)

// FormError is a body that is not a multipart form the proxy can read and
// replay: the client's mistake (a 400).
type FormError struct{ Msg string }

func (e *FormError) Error() string { return "malformed multipart body: " + e.Msg }

// ReadError is a failure to read the client's body itself: it went away,
// timed out, or sent fewer bytes than its Content-Length.
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return "reading the upload: " + e.Err.Error() }

func (e *ReadError) Unwrap() error { return e.Err }

// Part is one part of a form, in the order the client sent it.
type Part struct {
	// Name is the part's form field name (Content-Disposition name).
	Name string
	// FileName is the part's filename parameter ("" for a plain field).
	FileName string
	// File reports a file part: its content is hashed, not held (Value is
	// empty).
	File bool
	// Value is a field's value.
	Value string
	// Size is the content's length in bytes.
	Size int64
	// SHA256 is a file part's content hash.
	SHA256 [sha256.Size]byte
}

// Form is a multipart upload read into a spool. Close it when the request
// ends.
type Form struct {
	// Parts are the form's parts in order.
	Parts []Part
	sp    *spool
	// content are the parts' content spans in the body, by part.
	content []span
}

type span struct{ start, end int64 }

// Options says how Pool.Read reads one form.
type Options struct {
	// Boundary is the multipart boundary (the Content-Type's parameter).
	Boundary string
	// Size is the body's declared length (Content-Length), or -1 when
	// unknown (chunked). A body that ends before Size bytes is a
	// ReadError.
	Size int64
	// Max is the largest body accepted; a larger one is ErrTooLarge.
	Max int64
	// FileFields are the field names whose parts are files even without a
	// filename parameter: their content is hashed, never held in memory.
	FileFields []string
}

// Read reads a multipart/form-data body from r, the client's, into a new
// spool, in one pass: the bytes go to the spool as they arrive, and the
// parts are parsed from them (mime/multipart) on the way, each file part
// hashed with SHA-256, each field held. Parts may come in any order.
//
// The errors are ErrTooLarge, ErrFull, a *ReadError (the client), a
// *FormError (the client's form), or a spool file error (the machine).
func (p *Pool) Read(r io.Reader, o Options) (*Form, error) {
	if o.Size > o.Max {
		return nil, ErrTooLarge
	}
	if o.Boundary == "" {
		return nil, &FormError{"no boundary"}
	}
	in := &bodyReader{r: r, size: o.Size, max: o.Max}
	f := &Form{sp: p.newSpool(o.Size)}
	sc := newScanner(o.Boundary)
	sink := &sink{sp: f.sp, sc: sc}
	err := f.parse(io.TeeReader(in, sink), o)
	if err == nil {
		err = f.sp.finish()
	}
	if err == nil {
		err = f.locate(sc)
	}
	if err != nil {
		f.Close()
		// The most telling error first: the client's read, our limits,
		// the spool, then what the parser made of what it got.
		switch {
		case in.err != nil:
			return nil, in.err
		case sink.err != nil:
			return nil, sink.err
		}
		var fe *FormError
		if !errors.As(err, &fe) {
			err = &FormError{err.Error()}
		}
		return nil, err
	}
	return f, nil
}

// parse reads the parts from r, then whatever follows the form (its
// epilogue), so the spool holds the whole body.
func (f *Form) parse(r io.Reader, o Options) error {
	mr := multipart.NewReader(r, o.Boundary)
	for {
		mp, err := mr.NextRawPart() // raw: no transfer decoding, the bytes as sent
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if len(f.Parts) == MaxParts {
			return &FormError{fmt.Sprintf("more than %d parts", MaxParts)}
		}
		pt := Part{Name: mp.FormName(), FileName: mp.FileName()}
		if pt.Name == "" {
			return &FormError{fmt.Sprintf("part %d has no form-data name", len(f.Parts)+1)}
		}
		pt.File = pt.FileName != "" || slices.Contains(o.FileFields, pt.Name)
		if pt.File {
			h := sha256.New()
			if pt.Size, err = io.Copy(h, mp); err != nil {
				return err
			}
			h.Sum(pt.SHA256[:0])
		} else {
			v, err := io.ReadAll(io.LimitReader(mp, MaxFieldBytes+1))
			if err != nil {
				return err
			}
			if len(v) > MaxFieldBytes {
				return &FormError{fmt.Sprintf("field %q is longer than %d bytes", truncate(pt.Name, 64), MaxFieldBytes)}
			}
			pt.Value, pt.Size = string(v), int64(len(v))
		}
		f.Parts = append(f.Parts, pt)
	}
	_, err := io.Copy(io.Discard, r)
	return err
}

// locate finds each part's content in the body from the scanner's marks,
// and checks them against what the parser read: the same parts, each of
// the same length. Only then may a part's bytes be replaced on replay.
func (f *Form) locate(sc *scanner) error {
	if sc.err != nil {
		return sc.err
	}
	// The scanner saw a part delimiter, then a header end, per part, and a
	// close delimiter; anything after that is the epilogue.
	if len(sc.delims) != len(f.Parts)+1 || len(sc.heads) != len(f.Parts) || !sc.closed {
		return &FormError{"its parts cannot be located (delimiter lines must end in CRLF)"}
	}
	f.content = make([]span, len(f.Parts))
	for i := range f.Parts {
		s := span{sc.heads[i], sc.delims[i+1]}
		if s.end-s.start != f.Parts[i].Size {
			return &FormError{fmt.Sprintf("part %d's framing is ambiguous", i+1)}
		}
		f.content[i] = s
	}
	return nil
}

// Size returns the body's length in bytes.
func (f *Form) Size() int64 { return f.sp.size }

// Spilled reports whether the upload is held in a file (it outgrew its
// memory).
func (f *Form) Spilled() bool { return f.sp.f != nil }

// Body returns a reader of the body as the client sent it, except that
// part i's content is value (i < 0: no part replaced), and its length. Each
// call returns a new reader from the start: one per attempt.
func (f *Form) Body(i int, value string) (io.Reader, int64) {
	size := f.sp.size
	if i < 0 || i >= len(f.content) {
		return io.NewSectionReader(f.sp, 0, size), size
	}
	c := f.content[i]
	return io.MultiReader(
		io.NewSectionReader(f.sp, 0, c.start),
		bytes.NewReader([]byte(value)),
		io.NewSectionReader(f.sp, c.end, size-c.end),
	), size - (c.end - c.start) + int64(len(value))
}

// Close releases the spool: its memory, its file, its share of the pool.
// It may be called more than once.
func (f *Form) Close() { f.sp.close() }

// bodyReader reads the client's body: at most max bytes (ErrTooLarge
// past them), and exactly size when size is known. It keeps the first
// failure, so that Read can tell the client's failures from the form's.
type bodyReader struct {
	r         io.Reader
	n         int64
	size, max int64
	err       error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if left := b.max + 1 - b.n; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	switch {
	case b.n > b.max:
		b.err = ErrTooLarge
		return n, b.err
	case err == io.EOF && b.size >= 0 && b.n < b.size:
		// fasthttp ends a request body stream with a plain EOF when the
		// client closes early: the length says it is cut.
		err = io.ErrUnexpectedEOF
	case err == nil && b.size >= 0 && b.n == b.size:
		err = io.EOF
	}
	if err != nil && err != io.EOF {
		b.err = &ReadError{err}
		return n, b.err
	}
	return n, err
}

// sink is where the body's bytes go as they are read: the spool, and the
// scanner that marks the parts' positions. It keeps the first failure.
type sink struct {
	sp  *spool
	sc  *scanner
	err error
}

func (s *sink) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if _, err := s.sp.Write(p); err != nil {
		s.err = err
		return 0, err
	}
	if err := s.sc.scan(p); err != nil {
		s.err = err
		return 0, err
	}
	return len(p), nil
}

// scanner marks, in a multipart body passing through it, where each
// delimiter ("CRLF--boundary") starts and where each part's header block
// ends, without holding the body: it keeps only a window the length of a
// delimiter across writes. The body is scanned as if it started with CRLF,
// so that a delimiter at its very start counts.
type scanner struct {
	delim  []byte  // "\r\n--" + boundary
	delims []int64 // offsets of the delimiters found
	heads  []int64 // offsets where the header blocks end (content starts)
	closed bool    // the close delimiter ("--" after the boundary) was found
	state  int
	hstart int64  // where the current header block started
	win    []byte // the unscanned tail of earlier writes, then the new bytes
	off    int64  // the body offset of win[0]
	err    error
}

const (
	inContent  = iota // looking for a delimiter
	afterDelim        // a delimiter: is "--" next (close) or a header block?
	inHeaders         // looking for the blank line ending the headers
	inEpilogue        // after the close delimiter: nothing more to mark
)

var crlfcrlf = []byte("\r\n\r\n")

func newScanner(boundary string) *scanner {
	d := []byte("\r\n--" + boundary)
	return &scanner{delim: d, win: append(make([]byte, 0, 8<<10), "\r\n"...), off: -2}
}

// scan marks what p (the next bytes of the body) completes.
func (s *scanner) scan(p []byte) error {
	if s.state == inEpilogue || s.err != nil {
		return s.err
	}
	s.win = append(s.win, p...)
	i := 0
	for s.err == nil {
		switch s.state {
		case inContent:
			j := bytes.Index(s.win[i:], s.delim)
			if j < 0 {
				i = max(i, len(s.win)-len(s.delim)+1)
				s.keep(i)
				return nil
			}
			if len(s.delims) > MaxParts+1 {
				s.err = &FormError{fmt.Sprintf("more than %d parts", MaxParts)}
				return s.err
			}
			s.delims = append(s.delims, s.off+int64(i+j))
			i += j + len(s.delim)
			s.state = afterDelim
		case afterDelim:
			if len(s.win)-i < 2 {
				s.keep(i)
				return nil
			}
			if s.win[i] == '-' && s.win[i+1] == '-' {
				s.closed, s.state = true, inEpilogue
				s.win = s.win[:0]
				return nil
			}
			s.state, s.hstart = inHeaders, s.off+int64(i)
		case inHeaders:
			// The delimiter line's CRLF and the blank line may be the
			// same four bytes: a part without headers.
			j := bytes.Index(s.win[i:], crlfcrlf)
			if j < 0 {
				i = max(i, len(s.win)-len(crlfcrlf)+1)
				if s.off+int64(len(s.win))-s.hstart > MaxHeaderBytes {
					s.err = &FormError{fmt.Sprintf("a part's headers are longer than %d bytes", MaxHeaderBytes)}
					return s.err
				}
				s.keep(i)
				return nil
			}
			s.heads = append(s.heads, s.off+int64(i+j+len(crlfcrlf)))
			i += j + len(crlfcrlf)
			s.state = inContent
		}
	}
	return s.err
}

// keep drops the window's bytes before i, which no match can start in.
func (s *scanner) keep(i int) {
	if i <= 0 {
		return
	}
	i = min(i, len(s.win))
	n := copy(s.win, s.win[i:])
	s.win = s.win[:n]
	s.off += int64(i)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
