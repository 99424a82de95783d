package cachekey

import (
	"bytes"
	"hash/maphash"
	"sync"
)

// Memo remembers the keys of recently derived request bodies by their exact
// bytes. A cache hit is most often the same client sending the same bytes
// again; for those, Memo.Derive costs one fast non-cryptographic hash and a
// byte comparison instead of canonicalizing and hashing with SHA-256. A body
// that differs in any byte (even only in whitespace or key order) is derived
// afresh, so the key is always exactly [Derive]'s.
//
// Bodies up to MemoMaxBody bytes are remembered, MemoEntries of them at
// most (oldest first out), so a Memo holds at most about 2.5 MiB. The zero
// value is not usable: call NewMemo. A Memo is safe for concurrent use.
type Memo struct {
	seed   maphash.Seed
	shards [memoShards]memoShard
}

const (
	// MemoMaxBody is the largest body a Memo remembers.
	MemoMaxBody = 4 << 10
	// MemoEntries bounds how many bodies a Memo remembers.
	MemoEntries = memoShards * memoPerShard

	memoShards   = 16
	memoPerShard = 32
)

type memoShard struct {
	mu   sync.Mutex
	m    map[uint64]*memoEntry
	ring [memoPerShard]uint64 // hashes in insertion order, for eviction
	next int                  // the ring slot to fill (and evict) next
	n    int                  // entries in the ring
}

type memoEntry struct {
	namespace string
	body      []byte
	key       string
}

// NewMemo returns an empty Memo.
func NewMemo() *Memo {
	m := &Memo{seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].m = make(map[uint64]*memoEntry, memoPerShard)
	}
	return m
}

// Derive returns Derive(namespace, body), from memory when the same
// namespace and bytes were derived recently. Errors are not remembered.
func (m *Memo) Derive(namespace string, body []byte) (string, error) {
	if len(body) > MemoMaxBody {
		return Derive(namespace, body)
	}
	h := maphash.Bytes(m.seed, body)
	s := &m.shards[h%memoShards]
	s.mu.Lock()
	e, ok := s.m[h]
	s.mu.Unlock()
	if ok && e.namespace == namespace && bytes.Equal(e.body, body) {
		return e.key, nil
	}
	key, err := Derive(namespace, body)
	if err != nil {
		return key, err
	}
	e = &memoEntry{namespace: namespace, body: bytes.Clone(body), key: key}
	s.mu.Lock()
	if _, dup := s.m[h]; !dup {
		if s.n == memoPerShard {
			delete(s.m, s.ring[s.next])
		} else {
			s.n++
		}
		s.ring[s.next] = h
		s.next = (s.next + 1) % memoPerShard
	}
	s.m[h] = e // a colliding hash or a new namespace: the latest wins
	s.mu.Unlock()
	return key, nil
}
