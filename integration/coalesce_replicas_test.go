package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Coalescing across replicas (memcached leases) and live coalesced
// streams within one replica (issue #14).

// upstreamTimeoutYAML is upstreamYAML with the given timeout, which sets
// the lease's TTL.
func upstreamTimeoutYAML(name, baseURL string, timeout string) string {
	return fmt.Sprintf(`  - name: %s
    provider: openai
    base_url: %s
    api_key: k
    priority: 1
    timeout: %s
    first_token_timeout: 2s
    idle_timeout: 2s
`, name, baseURL, timeout)
}

// sseEvent is one data event a client read, and when.
type sseEvent struct {
	at   time.Time
	data string
}

// readEvents reads an SSE response's data events as they arrive.
func readEvents(t *testing.T, resp *http.Response) ([]sseEvent, error) {
	t.Helper()
	defer resp.Body.Close()
	var evs []sseEvent
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			evs = append(evs, sseEvent{at: time.Now(), data: strings.TrimSpace(line[len("data: "):])})
		}
		if err == io.EOF {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
	}
}

// streamText assembles a stream's answer from its data events: the
// content deltas, and whether it ended with [DONE] and no error.
func streamText(evs []sseEvent) (string, bool) {
	var b strings.Builder
	for i, ev := range evs {
		if ev.data == "[DONE]" {
			return b.String(), i == len(evs)-1
		}
		var ch struct {
			Error   json.RawMessage
			Choices []struct {
				Delta struct{ Content string }
			}
		}
		if json.Unmarshal([]byte(ev.data), &ch) != nil || ch.Error != nil {
			return b.String(), false
		}
		for _, c := range ch.Choices {
			b.WriteString(c.Delta.Content)
		}
	}
	return b.String(), false
}

// burst sends n identical requests to each proxy at once and returns the
// answers' X-Cache values and bodies, in no particular order.
func burst(t *testing.T, ps []*proxyProc, n int, body string, read func(*http.Response) string) (xcache, bodies []string) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, p := range ps {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				r := post(t, p.URL, body)
				b := read(r)
				mu.Lock()
				defer mu.Unlock()
				if r.StatusCode != 200 {
					t.Errorf("status %d: %s", r.StatusCode, b)
				}
				xcache = append(xcache, r.Header.Get("X-Cache"))
				bodies = append(bodies, b)
			}()
		}
	}
	close(start)
	wg.Wait()
	return xcache, bodies
}

func countValues(vs []string) map[string]int {
	m := map[string]int{}
	for _, v := range vs {
		m[v]++
	}
	return m
}

// TestCoalesceAcrossReplicas: 3 replicas sharing memcached, 20 identical
// concurrent misses on each (60): the upstream sees one call, plain and
// stream, and every client gets the whole answer.
func TestCoalesceAcrossReplicas(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		body    string
		read    func(t *testing.T) func(*http.Response) string
	}{
		{"plain", func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Second)
			okJSON("shared answer")(w, r)
		}, `{"model":"m","messages":[{"role":"user","content":"across replicas"}]}`,
			func(t *testing.T) func(*http.Response) string {
				return func(r *http.Response) string { return string(readAll(t, r)) }
			}},
		{"stream", sseHandler(streamScript{words: []string{"one ", "answer ", "for ", "all ", "replicas"}, delay: 150 * time.Millisecond}),
			`{"model":"m","stream":true,"messages":[{"role":"user","content":"across replicas, streamed"}]}`,
			func(t *testing.T) func(*http.Response) string {
				return func(r *http.Response) string {
					evs, err := readEvents(t, r)
					text, complete := streamText(evs)
					if err != nil || !complete {
						return fmt.Sprintf("incomplete stream (%v): %q", err, text)
					}
					return text
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startMemcached(t)
			up := newFake(t, tc.handler)
			ps := startReplicas(t, 3, testConfig(memcachedYAML(m.Addr()), upstreamYAML("one", up.BaseURL(), "k", 1, "")))
			start := time.Now()
			xc, bodies := burst(t, ps, 20, tc.body, tc.read(t))
			t.Logf("%s: 60 requests over 3 replicas in %v: %d upstream call(s), X-Cache %v", tc.name, time.Since(start).Round(time.Millisecond), up.Calls(), countValues(xc))
			if up.Calls() != 1 {
				t.Errorf("upstream calls %d, want 1", up.Calls())
			}
			for i, b := range bodies {
				if b != bodies[0] {
					t.Errorf("answer %d differs:\n%s\nwant\n%s", i, b, bodies[0])
				}
			}
			// The lease holder's call is the MISS; each waiting replica reads
			// its entry from memcached (HIT); the others in each replica
			// follow their replica's call in-process (COALESCED).
			if c := countValues(xc); c["MISS"] != 1 || c["HIT"] < 2 || c["MISS"]+c["COALESCED"]+c["HIT"] != 60 {
				t.Errorf("X-Cache %v, want one MISS, at least one HIT per waiting replica, the rest COALESCED", c)
			}
			var gotHit float64
			for _, p := range ps {
				gotHit += scrape(t, p.URL, `switchyard_cache_leases_total{result="hit"}`)
			}
			if gotHit != 2 {
				t.Errorf("replicas that waited on the lease and served its entry: %v, want 2", gotHit)
			}
		})
	}
}

// TestCoalesceAcrossReplicasLeaderFails: the lease holder's upstream call
// fails; it releases the lease at once, and the waiting replicas go
// upstream themselves instead of waiting out the lease's TTL.
func TestCoalesceAcrossReplicasLeaderFails(t *testing.T) {
	m := startMemcached(t)
	var mu sync.Mutex
	first := true
	up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fail := first
		first = false
		mu.Unlock()
		time.Sleep(300 * time.Millisecond)
		if fail {
			http.Error(w, `{"error":{"message":"boom","type":"server_error"}}`, 500)
			return
		}
		okJSON("second try")(w, r)
	})
	// A 10s lease: a waiter that waited it out would show.
	ps := startReplicas(t, 3, testConfig(memcachedYAML(m.Addr()), upstreamTimeoutYAML("one", up.BaseURL(), "10s")))
	body := `{"model":"m","messages":[{"role":"user","content":"the leader fails"}]}`

	start := time.Now()
	leader := make(chan int, 1)
	go func() {
		r := post(t, ps[0].URL, body)
		readAll(t, r)
		leader <- r.StatusCode
	}()
	for i := 0; up.Calls() == 0; i++ {
		if i == 200 {
			t.Fatal("the leader did not reach the upstream within 2s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var wg sync.WaitGroup
	took := make([]time.Duration, 2)
	for i, p := range ps[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := post(t, p.URL, body)
			b := readAll(t, r)
			took[i] = time.Since(start)
			if r.StatusCode != 200 || !strings.Contains(string(b), "second try") {
				t.Errorf("waiter on replica %d: %d %s", i+1, r.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	if st := <-leader; st/100 != 5 {
		t.Errorf("the leader's client got %d, want the 5xx of its failed call", st)
	}
	t.Logf("waiters answered %v and %v after the leader started (its call failed at ~300ms; lease TTL 10s)", took[0].Round(time.Millisecond), took[1].Round(time.Millisecond))
	for i, d := range took {
		if d > 5*time.Second {
			t.Errorf("waiter %d answered after %v: it waited for the lease to expire instead of its release", i, d)
		}
	}
	var gone float64
	for _, p := range ps[1:] {
		gone += scrape(t, p.URL, `switchyard_cache_leases_total{result="gone"}`)
	}
	if gone != 2 {
		t.Errorf("waiters that saw the lease go: %v, want 2", gone)
	}
}

// TestCoalesceAcrossReplicasOutlivesLease: a stream three times longer
// than the lease's TTL (1 s: the upstream timeout) still makes one
// upstream call for identical requests on three replicas: its holder
// renews the lease while the stream runs, so the waiters wait for its
// entry instead of going upstream when the first TTL ends.
func TestCoalesceAcrossReplicasOutlivesLease(t *testing.T) {
	m := startMemcached(t)
	up := newFake(t, sseHandler(streamScript{words: []string{"a ", "long ", "answer ", "that ", "outlives ", "its ", "lease"}, delay: 450 * time.Millisecond}))
	ps := startReplicas(t, 3, testConfig(memcachedYAML(m.Addr()), upstreamTimeoutYAML("one", up.BaseURL(), "1s")))
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"a stream longer than the lease"}]}`
	start := time.Now()
	xc, bodies := burst(t, ps, 4, body, func(r *http.Response) string {
		evs, err := readEvents(t, r)
		text, complete := streamText(evs)
		if err != nil || !complete {
			return fmt.Sprintf("incomplete stream (%v): %q", err, text)
		}
		return text
	})
	t.Logf("12 requests over 3 replicas in %v: %d upstream call(s), X-Cache %v", time.Since(start).Round(time.Millisecond), up.Calls(), countValues(xc))
	if up.Calls() != 1 {
		t.Errorf("upstream calls %d, want 1: the waiters went upstream when the lease's first TTL ended", up.Calls())
	}
	for i, b := range bodies {
		if b != "a long answer that outlives its lease" {
			t.Errorf("answer %d: %q", i, b)
		}
	}
	var renewed float64
	for _, p := range ps {
		renewed += scrape(t, p.URL, `switchyard_cache_leases_total{result="renewed"}`)
	}
	if renewed < 3 {
		t.Errorf("lease renewals %v, want >= 3 (every half second of a 3 s stream)", renewed)
	}
}

// TestCoalesceAcrossReplicasHolderKilled: the replica holding the lease is
// SIGKILLed mid-call; the lease expires after its TTL and the waiting
// replica goes upstream itself.
func TestCoalesceAcrossReplicasHolderKilled(t *testing.T) {
	m := startMemcached(t)
	var mu sync.Mutex
	calls := 0
	up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 { // the holder's call: never answered
			select {
			case <-r.Context().Done():
			case <-time.After(15 * time.Second):
			}
			return
		}
		okJSON("after the holder died")(w, r)
	})
	ps := startReplicas(t, 2, testConfig(memcachedYAML(m.Addr()), upstreamTimeoutYAML("one", up.BaseURL(), "2s")))
	body := `{"model":"m","messages":[{"role":"user","content":"the holder dies"}]}`

	go func() {
		req, _ := http.NewRequest("POST", ps[0].URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if r, err := httpClient.Do(req); err == nil { // killed: an error is expected
			r.Body.Close()
		}
	}()
	for i := 0; up.Calls() == 0; i++ {
		if i == 200 {
			t.Fatal("the holder did not reach the upstream within 2s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := post(t, ps[1].URL, body)
		b := readAll(t, r)
		if r.StatusCode != 200 || !strings.Contains(string(b), "after the holder died") {
			t.Errorf("waiter: %d %s", r.StatusCode, b)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	ps[0].Signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(8 * time.Second):
		t.Fatal("the waiter did not answer within 8s of a 2s lease whose holder was killed")
	}
	took := time.Since(start)
	t.Logf("waiter answered %v after it started (lease TTL 2s, memcached's clock rounds to the second)", took.Round(time.Millisecond))
	if took < 500*time.Millisecond {
		t.Errorf("the waiter answered after %v: it did not wait for the lease", took)
	}
	if up.Calls() != 2 {
		t.Errorf("upstream calls %d, want 2 (the dead holder's, the waiter's)", up.Calls())
	}
	if v := scrape(t, ps[1].URL, `switchyard_cache_leases_total{result="gone"}`); v != 1 {
		t.Errorf(`leases_total{result="gone"} = %v, want 1`, v)
	}
}

// TestCoalescedStreamIsLive: followers of a stream in flight get each
// event as the leader does, not the whole answer at its end, whether
// they arrived before its first event or in its middle.
func TestCoalescedStreamIsLive(t *testing.T) {
	words := []string{"a ", "live ", "stream ", "of ", "eight ", "words ", "for ", "all"}
	up := newFake(t, sseHandler(streamScript{words: words, delay: 100 * time.Millisecond}))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	for _, tc := range []struct {
		name string
		join time.Duration // after the leader's call reached the upstream
	}{
		{"before the first event", 0},
		{"mid-stream", 350 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := up.Calls()
			body := fmt.Sprintf(`{"model":"m","stream":true,"messages":[{"role":"user","content":"live %s"}]}`, tc.name)
			type result struct {
				evs    []sseEvent
				xcache string
				sent   time.Time
			}
			leader := make(chan result, 1)
			go func() {
				r := post(t, p.URL, body)
				evs, err := readEvents(t, r)
				if err != nil {
					t.Errorf("leader: %v", err)
				}
				leader <- result{evs: evs, xcache: r.Header.Get("X-Cache")}
			}()
			for i := 0; up.Calls() == calls; i++ {
				if i == 200 {
					t.Fatal("the leader did not reach the upstream within 2s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(tc.join)
			const n = 3
			followers := make(chan result, n)
			for range n {
				go func() {
					sent := time.Now()
					r := post(t, p.URL, body)
					evs, err := readEvents(t, r)
					if err != nil {
						t.Errorf("follower: %v", err)
					}
					followers <- result{evs: evs, xcache: r.Header.Get("X-Cache"), sent: sent}
				}()
			}
			l := <-leader
			want, complete := streamText(l.evs)
			if !complete || want != strings.Join(words, "") {
				t.Fatalf("leader's stream: %q complete=%v", want, complete)
			}
			for range n {
				f := <-followers
				got, complete := streamText(f.evs)
				if !complete || got != want || f.xcache != "COALESCED" {
					t.Fatalf("follower: X-Cache %q, stream %q complete=%v; want COALESCED, %q", f.xcache, got, complete, want)
				}
				if tc.join == 0 {
					lag := f.evs[0].at.Sub(l.evs[0].at)
					t.Logf("follower's first event %v after the leader's (events 100ms apart)", lag.Round(100*time.Microsecond))
					if lag > 450*time.Millisecond { // before: the whole stream, ~900ms
						t.Errorf("follower's first event %v after the leader's", lag)
					}
				} else {
					wait := f.evs[0].at.Sub(f.sent)
					t.Logf("follower joining mid-stream: first event %v after its request", wait.Round(100*time.Microsecond))
					if wait > 450*time.Millisecond {
						t.Errorf("follower joining mid-stream got its first event %v after its request", wait)
					}
				}
				// Live: the follower's events are spread like the
				// upstream's, not delivered together at the end.
				if spread := f.evs[len(f.evs)-1].at.Sub(f.evs[0].at); spread < 300*time.Millisecond {
					t.Errorf("follower's events spread over %v: delivered at the end, not live", spread)
				}
			}
			if up.Calls() != calls+1 {
				t.Errorf("upstream calls %d, want 1", up.Calls()-calls)
			}
		})
	}
}

// TestCoalescedStreamLeaderNeverReads: the leader's client (a raw TCP
// client) never reads its response; followers still get the whole stream
// at the upstream's pace, and the upstream is read to its end, long
// before the leader's write_timeout.
func TestCoalescedStreamLeaderNeverReads(t *testing.T) {
	const events = 200
	big := strings.Repeat("x", 16<<10)
	upstreamDone := make(chan time.Time, 1)
	up := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		for i := range events {
			if _, err := io.WriteString(w, chunk("m", big, "")); err != nil {
				return
			}
			fl.Flush()
			if i%10 == 0 {
				time.Sleep(20 * time.Millisecond)
			}
		}
		io.WriteString(w, chunk("m", "", "stop")+"data: [DONE]\n\n")
		fl.Flush()
		upstreamDone <- time.Now()
	})
	p := startProxy(t, testConfig("write_timeout: 30s\n", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"a leader that never reads"}]}`

	// The leader: a small receive buffer, and not one byte read.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	for i := 0; up.Calls() == 0; i++ {
		if i == 200 {
			t.Fatal("the leader did not reach the upstream within 2s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	const n = 2
	var wg sync.WaitGroup
	ends := make([]time.Time, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := post(t, p.URL, body)
			evs, err := readEvents(t, r)
			ends[i] = time.Now()
			if err != nil || r.Header.Get("X-Cache") != "COALESCED" {
				t.Errorf("follower %d: X-Cache %q, %v", i, r.Header.Get("X-Cache"), err)
			}
			if len(evs) != events+2 || evs[len(evs)-1].data != "[DONE]" {
				t.Errorf("follower %d got %d events, want %d and [DONE]", i, len(evs), events+2)
			}
		}()
	}
	wg.Wait()
	var upEnd time.Time
	select {
	case upEnd = <-upstreamDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream was not read to its end: the stalled leader paces it")
	}
	for i, e := range ends {
		t.Logf("follower %d done %v after it started, %v after the upstream's last event", i, e.Sub(start).Round(time.Millisecond), e.Sub(upEnd).Round(time.Millisecond))
		if e.Sub(start) > 10*time.Second {
			t.Errorf("follower %d took %v (write_timeout 30s)", i, e.Sub(start))
		}
	}
	if up.Calls() != 1 {
		t.Errorf("upstream calls %d, want 1", up.Calls())
	}
}

// TestCoalescedStreamPerClient: the clients of one live stream each get
// it as they asked: the usage chunk only for those that asked
// (stream_options.include_usage), the whole chat.completion for a plain
// request, which waits for the entry.
func TestCoalescedStreamPerClient(t *testing.T) {
	up := newFake(t, sseHandler(streamScript{words: []string{"per ", "client ", "views"}, delay: 100 * time.Millisecond, usage: true}))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	type result struct {
		body   string
		evs    []sseEvent
		xcache string
	}
	get := func(body string, stream bool) result {
		r := post(t, p.URL, body)
		if !stream {
			return result{body: string(readAll(t, r)), xcache: r.Header.Get("X-Cache")}
		}
		evs, err := readEvents(t, r)
		if err != nil {
			t.Errorf("reading a stream: %v", err)
		}
		return result{evs: evs, xcache: r.Header.Get("X-Cache")}
	}
	hasUsage := func(evs []sseEvent) bool {
		for _, ev := range evs {
			if strings.Contains(ev.data, `"usage":{`) {
				return true
			}
		}
		return false
	}
	for _, leaderWantsUsage := range []bool{false, true} {
		t.Run(fmt.Sprintf("leader include_usage=%v", leaderWantsUsage), func(t *testing.T) {
			calls := up.Calls()
			msgs := fmt.Sprintf(`"messages":[{"role":"user","content":"per client %v"}]`, leaderWantsUsage) // a key per run
			plainBody := `{"model":"m",` + msgs + `}`
			streamBody := `{"model":"m","stream":true,` + msgs + `}`
			usageBody := `{"model":"m","stream":true,"stream_options":{"include_usage":true},` + msgs + `}`
			leaderBody, otherBody := streamBody, usageBody
			if leaderWantsUsage {
				leaderBody, otherBody = usageBody, streamBody
			}
			leader := make(chan result, 1)
			go func() { leader <- get(leaderBody, true) }()
			for i := 0; up.Calls() == calls; i++ {
				if i == 200 {
					t.Fatal("the leader did not reach the upstream within 2s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			other, plain := make(chan result, 1), make(chan result, 1)
			go func() { other <- get(otherBody, true) }()
			go func() { plain <- get(plainBody, false) }()
			l, o, pl := <-leader, <-other, <-plain
			if hasUsage(l.evs) != leaderWantsUsage || hasUsage(o.evs) == leaderWantsUsage {
				t.Errorf("usage chunk: leader %v (asked %v), follower %v (asked %v)", hasUsage(l.evs), leaderWantsUsage, hasUsage(o.evs), !leaderWantsUsage)
			}
			lt, lok := streamText(l.evs)
			ot, ook := streamText(o.evs)
			if !lok || !ook || lt != "per client views" || ot != lt || o.xcache != "COALESCED" {
				t.Errorf("leader %q (%v), follower %q (%v) X-Cache %q", lt, lok, ot, ook, o.xcache)
			}
			var c struct {
				Object  string
				Choices []struct{ Message struct{ Content string } }
			}
			if err := json.Unmarshal([]byte(pl.body), &c); err != nil || c.Object != "chat.completion" || len(c.Choices) != 1 ||
				c.Choices[0].Message.Content != "per client views" || pl.xcache != "COALESCED" {
				t.Errorf("plain follower: X-Cache %q, %s", pl.xcache, pl.body)
			}
			if up.Calls() != calls+1 {
				t.Errorf("upstream calls %d, want 1", up.Calls()-calls)
			}
		})
	}
}

// TestCoalescedStreamFailureReachesFollowers: the upstream fails after the
// commit; the leader and its followers each get the events so far, then
// the in-band error, and nothing is cached.
func TestCoalescedStreamFailureReachesFollowers(t *testing.T) {
	up := newFake(t, sseHandler(streamScript{words: []string{"cut ", "in ", "the ", "middle"}, delay: 100 * time.Millisecond, cutAfter: 3}))
	p := startProxy(t, testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")))
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"a stream that fails"}]}`
	const n = 3 // the leader and two followers
	results := make(chan []sseEvent, n)
	read := func() {
		evs, _ := readEvents(t, post(t, p.URL, body)) // the body ends broken: an error is expected
		results <- evs
	}
	go read()
	for i := 0; up.Calls() == 0; i++ {
		if i == 200 {
			t.Fatal("the leader did not reach the upstream within 2s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for range n - 1 {
		go read()
	}
	for range n {
		evs := <-results
		text, complete := streamText(evs)
		if complete || text != "cut in the " || len(evs) == 0 || !strings.Contains(evs[len(evs)-1].data, `"error"`) {
			t.Errorf("a client got %q (complete %v), last event %v: want the 3 events, then the in-band error", text, complete, evs)
		}
	}
	if up.Calls() != 1 {
		t.Errorf("upstream calls %d, want 1", up.Calls())
	}
	// Nothing was cached: the next request goes upstream.
	up.SetHandler(sseHandler(streamScript{words: []string{"whole"}}))
	r := post(t, p.URL, body)
	readAll(t, r)
	if r.Header.Get("X-Cache") != "MISS" || up.Calls() != 2 {
		t.Errorf("after the failed stream: X-Cache %q, calls %d; want a MISS and a second call", r.Header.Get("X-Cache"), up.Calls())
	}
}
