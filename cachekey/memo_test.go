package cachekey

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestMemoMatchesDerive(t *testing.T) {
	m := NewMemo()
	bodies := []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
		`{ "messages":[{"content":"hi","role":"user"}], "model":"m" }`, // same key, other bytes
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`,
		`{"model":"m","messages":[],"temperature":0.5}`,
		`{"model":"m","model":"n","messages":[]}`, // refused: duplicate key
		`{"model":"m"`, // refused: invalid
		`{"model":"big","messages":[{"role":"user","content":"` + strings.Repeat("x", MemoMaxBody) + `"}]}`,
	}
	for round := range 3 { // the later rounds answer from memory
		for _, ns := range []string{"switchyard", "other"} {
			for _, b := range bodies {
				want, wantErr := Derive(ns, []byte(b))
				got, err := m.Derive(ns, []byte(b))
				if got != want || (err == nil) != (wantErr == nil) {
					t.Errorf("round %d, %s, %.50s: Memo.Derive = %q, %v; Derive = %q, %v", round, ns, b, got, err, want, wantErr)
				}
			}
		}
	}
}

func TestMemoHitDoesNotAllocate(t *testing.T) {
	m := NewMemo()
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hello there"}]}`)
	if _, err := m.Derive("ns", body); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = m.Derive("ns", body) }); n != 0 {
		t.Errorf("a remembered body allocates %v times, want 0", n)
	}
}

func TestMemoIsBounded(t *testing.T) {
	m := NewMemo()
	for i := range 3 * MemoEntries {
		if _, err := m.Derive("ns", fmt.Appendf(nil, `{"model":"m","messages":[],"seed":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for i := range m.shards {
		s := &m.shards[i]
		if len(s.m) > memoPerShard || len(s.m) != s.n {
			t.Errorf("shard %d holds %d entries (ring says %d), bound %d", i, len(s.m), s.n, memoPerShard)
		}
		total += len(s.m)
	}
	if total > MemoEntries {
		t.Errorf("%d entries, bound %d", total, MemoEntries)
	}
}

func TestMemoConcurrent(t *testing.T) {
	m := NewMemo()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				b := fmt.Appendf(nil, `{"model":"m","messages":[],"seed":%d}`, (i*7+g)%100)
				want, _ := Derive("ns", b)
				if got, err := m.Derive("ns", b); err != nil || got != want {
					t.Errorf("Memo.Derive(%s) = %q, %v; want %q", b, got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}
