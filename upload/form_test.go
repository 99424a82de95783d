package upload

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"mime/multipart"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
)

// field is one part of a test form: a file when file is set.
type field struct {
	name, value, file string
}

// buildForm encodes fields as the SDKs do (mime/multipart.Writer).
func buildForm(t testing.TB, fields ...field) (body []byte, boundary string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, f := range fields {
		var part io.Writer
		var err error
		if f.file != "" {
			part, err = w.CreateFormFile(f.name, f.file)
		} else {
			part, err = w.CreateFormField(f.name)
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(part, f.value)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), w.Boundary()
}

func read(t testing.TB, p *Pool, r io.Reader, boundary string, size, maxSize int64) (*Form, error) {
	t.Helper()
	return p.Read(r, Options{Boundary: boundary, Size: size, Max: maxSize, FileFields: []string{"file"}})
}

func bodyOf(t testing.TB, f *Form, i int, v string) []byte {
	t.Helper()
	r, n := f.Body(i, v)
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != n {
		t.Fatalf("Body said %d bytes, gave %d", n, len(b))
	}
	return b
}

// TestReadFindsPartsAndReplaysByteForByte: the file is hashed, the fields
// held, in any order and however the body arrives (one byte per read, or
// whole); the replay is the body as sent, or the body with exactly one
// value replaced; spilled or not.
func TestReadFindsPartsAndReplaysByteForByte(t *testing.T) {
	audio := strings.Repeat("RIFF\r\n--not-the-boundary\r\n\r\n", 500) // content that looks like framing
	body, boundary := buildForm(t,
		field{name: "file", value: audio, file: "speech.wav"},
		field{name: "model", value: "whisper-1"},
		field{name: "language", value: "en"},
		field{name: "timestamp_granularities[]", value: "word"},
		field{name: "timestamp_granularities[]", value: "segment"},
	)
	readers := map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(body) },
		"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(body)) },
		"halves":   func() io.Reader { return iotest.HalfReader(bytes.NewReader(body)) },
	}
	pools := map[string]PoolOptions{
		"memory":       {},
		"spill midway": {MemPerSpool: 1000, Dir: t.TempDir()},
		"file only":    {MemPerSpool: -1, Dir: t.TempDir()},
	}
	for pname, po := range pools {
		for rname, r := range readers {
			for _, size := range []int64{int64(len(body)), -1} {
				t.Run(pname+"/"+rname, func(t *testing.T) {
					p := NewPool(po)
					f, err := read(t, p, r(), boundary, size, 1<<20)
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					if f.Spilled() != (pname != "memory") {
						t.Errorf("Spilled = %v", f.Spilled())
					}
					if len(f.Parts) != 5 {
						t.Fatalf("%d parts: %+v", len(f.Parts), f.Parts)
					}
					file := f.Parts[0]
					if !file.File || file.FileName != "speech.wav" || file.Size != int64(len(audio)) || file.SHA256 != sha256.Sum256([]byte(audio)) || file.Value != "" {
						t.Errorf("file part %+v", file)
					}
					if m := f.Parts[1]; m.File || m.Name != "model" || m.Value != "whisper-1" {
						t.Errorf("model part %+v", m)
					}
					if g := f.Parts[4]; g.Name != "timestamp_granularities[]" || g.Value != "segment" {
						t.Errorf("last part %+v", g)
					}
					if got := bodyOf(t, f, -1, ""); !bytes.Equal(got, body) {
						t.Fatal("the replay differs from the body")
					}
					want := bytes.Replace(body, []byte("\r\n\r\nwhisper-1\r\n"), []byte("\r\n\r\nwhisper-large-v3-turbo\r\n"), 1)
					if got := bodyOf(t, f, 1, "whisper-large-v3-turbo"); !bytes.Equal(got, want) {
						t.Fatalf("replay with the model replaced:\n%q\nwant\n%q", got[len(got)-400:], want[len(want)-400:])
					}
					if got := bodyOf(t, f, 1, "whisper-large-v3-turbo"); !bytes.Equal(got, want) {
						t.Fatal("a second replay differs")
					}
					if f.Size() != int64(len(body)) || p.Held() != int64(len(body)) {
						t.Errorf("Size %d, Held %d, want %d", f.Size(), p.Held(), len(body))
					}
					f.Close()
					f.Close()
					if p.Held() != 0 || p.mem.Load() != 0 {
						t.Errorf("after Close: held %d, memory %d", p.Held(), p.mem.Load())
					}
				})
			}
		}
	}
}

// TestReadKeepsPreambleAndEpilogue: bytes around the form are the
// client's too, and a body starting straight with its delimiter or after a
// preamble is located the same.
func TestReadKeepsPreambleAndEpilogue(t *testing.T) {
	form, boundary := buildForm(t, field{name: "model", value: "m"}, field{name: "file", value: "abc", file: "a.wav"})
	body := append([]byte("preamble text\r\n"), form...)
	body = append(body, "\r\nepilogue"...)
	f, err := read(t, NewPool(PoolOptions{}), bytes.NewReader(body), boundary, int64(len(body)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := bodyOf(t, f, -1, ""); !bytes.Equal(got, body) {
		t.Fatalf("replay %q", got)
	}
	if got := bodyOf(t, f, 0, "longer-model"); !bytes.Equal(got, bytes.Replace(body, []byte("\r\n\r\nm\r\n"), []byte("\r\n\r\nlonger-model\r\n"), 1)) {
		t.Fatalf("replay %q", got)
	}
}

// TestReadFileUnlinked: a spilled upload's file has no name in the spool
// directory, during the request or after it.
func TestReadFileUnlinked(t *testing.T) {
	dir := t.TempDir()
	body, boundary := buildForm(t, field{name: "file", value: strings.Repeat("x", 10000), file: "a.wav"}, field{name: "model", value: "m"})
	f, err := read(t, NewPool(PoolOptions{Dir: dir, MemPerSpool: 100}), bytes.NewReader(body), boundary, -1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Spilled() {
		t.Fatal("not spilled")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("spool directory holds %d entries during the request", len(ents))
	}
	f.Close()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("spool directory holds %d entries after it", len(ents))
	}
}

// TestReadErrors: each bad body gets its own error class, and leaves
// nothing held.
func TestReadErrors(t *testing.T) {
	good, boundary := buildForm(t, field{name: "file", value: strings.Repeat("a", 3000), file: "a.wav"}, field{name: "model", value: "m"})
	noName := strings.Replace(string(good), `form-data; name="model"`, `form-data`, 1)
	longField, _ := buildForm(t, field{name: "prompt", value: strings.Repeat("p", MaxFieldBytes+1)})
	longHeader := strings.Replace(string(good), `name="model"`, `name="model"; x="`+strings.Repeat("h", MaxHeaderBytes)+`"`, 1)
	lfOnly := strings.ReplaceAll(string(good), "\r\n", "\n")
	var many bytes.Buffer
	w := multipart.NewWriter(&many)
	_ = w.SetBoundary(boundary)
	for range MaxParts + 1 {
		_ = w.WriteField("f", "v")
	}
	w.Close()
	failing := iotest.ErrReader(errors.New("connection reset"))

	type check func(error) bool
	isForm := func(err error) bool { var fe *FormError; return errors.As(err, &fe) }
	isRead := func(err error) bool { var re *ReadError; return errors.As(err, &re) }
	for _, tc := range []struct {
		name string
		body io.Reader
		size int64
		max  int64
		pool PoolOptions
		want check
	}{
		{"declared too large", bytes.NewReader(good), int64(len(good)), 100, PoolOptions{}, func(e error) bool { return errors.Is(e, ErrTooLarge) }},
		{"chunked too large", bytes.NewReader(good), -1, 1000, PoolOptions{}, func(e error) bool { return errors.Is(e, ErrTooLarge) }},
		{"pool full", bytes.NewReader(good), -1, 1 << 20, PoolOptions{MaxBytes: 1000}, func(e error) bool { return errors.Is(e, ErrFull) }},
		{"cut short", bytes.NewReader(good[:len(good)-10]), int64(len(good)), 1 << 20, PoolOptions{}, func(e error) bool { return isRead(e) && errors.Is(e, io.ErrUnexpectedEOF) }},
		{"read fails", io.MultiReader(bytes.NewReader(good[:500]), failing), -1, 1 << 20, PoolOptions{}, isRead},
		{"no close delimiter", bytes.NewReader(good[:len(good)-10]), -1, 1 << 20, PoolOptions{}, isForm},
		{"not multipart", strings.NewReader(`{"model":"m"}`), -1, 1 << 20, PoolOptions{}, isForm},
		{"empty", strings.NewReader(""), 0, 1 << 20, PoolOptions{}, isForm},
		{"part without a name", strings.NewReader(noName), -1, 1 << 20, PoolOptions{}, isForm},
		{"field too long", bytes.NewReader(longField), -1, 1 << 20, PoolOptions{}, isForm},
		{"header too long", strings.NewReader(longHeader), -1, 1 << 20, PoolOptions{}, isForm},
		{"bare LF lines", strings.NewReader(lfOnly), -1, 1 << 20, PoolOptions{}, isForm},
		{"too many parts", bytes.NewReader(many.Bytes()), -1, 1 << 20, PoolOptions{}, isForm},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPool(tc.pool)
			f, err := read(t, p, tc.body, boundary, tc.size, tc.max)
			if err == nil {
				f.Close()
				t.Fatal("no error")
			}
			if !tc.want(err) {
				t.Errorf("error %T %v", err, err)
			}
			if p.Held() != 0 || p.mem.Load() != 0 {
				t.Errorf("after the error: held %d, memory %d", p.Held(), p.mem.Load())
			}
		})
	}
}

// TestPoolBoundsMemory: spools share the memory bound; one that finds it
// used up goes to a file at once.
func TestPoolBoundsMemory(t *testing.T) {
	var gauge atomic.Int64
	p := NewPool(PoolOptions{MemPerSpool: 4096, MemTotal: 6000, Dir: t.TempDir(), OnHeld: func(d int64) { gauge.Add(d) }})
	body, boundary := buildForm(t, field{name: "file", value: strings.Repeat("a", 3000), file: "a.wav"}, field{name: "model", value: "m"})
	first, err := read(t, p, bytes.NewReader(body), boundary, -1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	second, err := read(t, p, bytes.NewReader(body), boundary, -1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if first.Spilled() || !second.Spilled() {
		t.Errorf("spilled: first %v, second %v; want only the second", first.Spilled(), second.Spilled())
	}
	if !bytes.Equal(bodyOf(t, second, -1, ""), body) {
		t.Error("the spilled replay differs")
	}
	if gauge.Load() != 2*int64(len(body)) {
		t.Errorf("OnHeld total %d, want %d", gauge.Load(), 2*len(body))
	}
	first.Close()
	second.Close()
	if p.mem.Load() != 0 || p.Spilled() != 1 || gauge.Load() != 0 {
		t.Errorf("memory %d, spilled %d, OnHeld total %d", p.mem.Load(), p.Spilled(), gauge.Load())
	}
}

// FuzzRead: no body makes Read panic, and a body it accepts replays as it
// came, with any part's value replaced exactly.
func FuzzRead(f *testing.F) {
	good, boundary := buildForm(f, field{name: "file", value: "RIFF\x00\x01", file: "a.wav"}, field{name: "model", value: "m"})
	f.Add(good)
	f.Add([]byte("--" + boundary + "\r\n\r\nx\r\n--" + boundary + "--"))
	f.Add([]byte("--" + boundary + "--\r\n"))
	f.Add([]byte("\r\n--" + boundary + "\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\r\n--" + boundary + "\r\n\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		p := NewPool(PoolOptions{MemPerSpool: 64, Dir: t.TempDir()})
		form, err := read(t, p, iotest.HalfReader(bytes.NewReader(body)), boundary, -1, 1<<20)
		if err != nil {
			if p.Held() != 0 {
				t.Fatalf("held %d after an error", p.Held())
			}
			return
		}
		defer form.Close()
		if got := bodyOf(t, form, -1, ""); !bytes.Equal(got, body) {
			t.Fatalf("replay differs")
		}
		for i, pt := range form.Parts {
			r, _ := form.Body(i, "Z")
			b, _ := io.ReadAll(r)
			c := form.content[i]
			want := append(append(append([]byte{}, body[:c.start]...), 'Z'), body[c.end:]...)
			if !bytes.Equal(b, want) || (!pt.File && string(body[c.start:c.end]) != pt.Value) {
				t.Fatalf("part %d replaced wrongly", i)
			}
		}
	})
}
