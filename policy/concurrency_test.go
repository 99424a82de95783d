package policy

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"switchyard/config"
	"switchyard/verdict"
)

func TestConcurrentUse(t *testing.T) {
	c := newClock(t0)
	o := testOpts(c, nil)
	o.Breaker = config.Breaker{FailureThreshold: 3, Delay: 5 * time.Millisecond}
	p := mustNew(t, []config.Upstream{
		{Name: "a", Quota: config.Quota{Limit: 1 << 40, Unit: "tokens"}, Retry: config.Retry{Attempts: 1, Backoff: time.Millisecond}},
		{Name: "b", QuotaGroup: "g", Quota: config.Quota{Limit: 1000}},
		{Name: "c", QuotaGroup: "g", Priority: 1},
	}, o)
	outcomes := []verdict.Outcome{verdict.OK, verdict.OK, verdict.OK, verdict.Failure, verdict.RateLimited, verdict.KeyRejected, verdict.NotServed, verdict.ClientError, verdict.QuotaExhausted}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				model := fmt.Sprintf("m%d", (g+i)%3)
				ranked, _ := p.Rank(targets(model, "a", "b", "c"))
				for _, cand := range ranked {
					out := outcomes[(g*7+i)%len(outcomes)]
					a, err := p.Do(cand.Name, cand.Model, nil, run(out))
					if errors.Is(err, ErrBreakerOpen) {
						continue
					}
					p.Observe(cand.Name, cand.Model, Observation{
						Outcome: a.Outcome, Status: 200, Latency: time.Duration(i%7+1) * time.Millisecond,
						Usage:     Usage{PromptTokens: 3, CompletionTokens: 4},
						RateLimit: verdict.RateLimit{LimitRequests: 100, RemainingRequests: int64(i % 100), ResetRequests: time.Second, Known: true},
					})
					if i%50 == 0 {
						p.StreamFailed(cand.Name, cand.Model, false, Observation{Status: 200, Err: "cut"})
					}
					if !a.Outcome.FailsOver() {
						break
					}
				}
				if i%100 == 0 {
					p.Snapshot()
					c.Advance(time.Second)
				}
			}
		}()
	}
	wg.Wait()
	if st := p.Snapshot(); len(st) != 3 || st[0].Requests == 0 {
		t.Fatalf("snapshot = %+v", st)
	}
}

func TestReload(t *testing.T) {
	c := newClock(t0)
	o := testOpts(c, nil)
	o.Breaker = config.Breaker{FailureThreshold: 2, Delay: time.Minute}
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 2}}, {Name: "b"}, {Name: "gone"}}, o)
	p.Do("a", "m", nil, observed(p, "a", "m", fail()))
	p.Do("a", "m", nil, observed(p, "a", "m", fail())) // (a, m) open; 502s are free
	p.Observe("a", "m", ok(0))                         // quota 1 of 2
	p.Observe("b", "m", classified(Observation{Outcome: verdict.RateLimited, Status: 429, RateLimit: verdict.RateLimit{RetryAfter: time.Minute, Known: true}}))
	p.Observe("b", "m", fail())

	np, err := p.Reload([]config.Upstream{{Name: "b"}, {Name: "a", Quota: config.Quota{Limit: 2}}, {Name: "new"}}, o)
	if err != nil {
		t.Fatal(err)
	}
	_, skipped := np.Rank(targets("m", "a", "b", "new"))
	if len(skipped) != 2 || skipped[0].Reason != ReasonBreakerOpen || skipped[1].Reason != ReasonRateLimited {
		t.Fatalf("skipped after reload = %+v", skipped)
	}
	np.Observe("a", "m2", ok(0)) // second of 2: the carried count
	if sk := mustAdmit(t, np, targets("m2", "a"), "a"); sk == nil || sk.Reason != ReasonQuotaExhausted {
		t.Fatalf("quota not carried over: %+v", sk)
	}
	st := np.Snapshot()
	if st[0].Name != "b" || st[0].Failures != 1 || st[0].LastError != "bad gateway" || st[2].Name != "new" {
		t.Fatalf("snapshot = %+v", st)
	}

	// Changed breaker settings start with closed breakers but keep the rest.
	o2 := o
	o2.Breaker.FailureThreshold = 3
	np2, err := np.Reload([]config.Upstream{{Name: "a", Quota: config.Quota{Limit: 2}}, {Name: "b"}}, o2)
	if err != nil {
		t.Fatal(err)
	}
	_, skipped = np2.Rank(targets("m", "a", "b"))
	if len(skipped) != 2 || skipped[0].Reason != ReasonQuotaExhausted || skipped[1].Reason != ReasonRateLimited {
		t.Fatalf("skipped after second reload = %+v", skipped)
	}
	if st := np2.Snapshot()[0]; st.Breaker != "closed" || st.Requests != 4 {
		t.Fatalf("a after breaker change = %+v", st)
	}
	if _, err := np.Reload(nil, o); err == nil {
		t.Fatal("reload without upstreams accepted")
	}
}

func TestMetrics(t *testing.T) {
	set := metrics.NewSet()
	o := testOpts(newClock(t0), nil)
	o.Metrics = set
	o.Breaker = config.Breaker{FailureThreshold: 1, Delay: time.Minute}
	p := mustNew(t, []config.Upstream{{Name: "a", Quota: config.Quota{Limit: 10}}, {Name: "b"}}, o)
	p.Observe("a", "m", ok(0))
	p.Observe("a", "m", ok(0))
	p.Do("b", "m", nil, run(verdict.Failure))
	p.Observe("b", "m", fail())
	cur := p
	scrape := func() string {
		var buf bytes.Buffer
		set.WritePrometheus(&buf)
		cur.Gauges().WritePrometheus(&buf)
		return buf.String()
	}
	out := scrape()
	for _, want := range []string{
		`switchyard_upstream_breaker_state{upstream="a"} 0`,
		`switchyard_upstream_breaker_state{upstream="b"} 2`,
		`switchyard_upstream_health{upstream="a"} 1`,
		`switchyard_upstream_health{upstream="b"} 0`,
		`switchyard_upstream_quota_used{upstream="a",unit="requests"} 2`,
		`switchyard_upstream_quota_limit{upstream="a",unit="requests"} 10`,
		`switchyard_upstream_breaker_transitions_total{upstream="b",to="open"} 1`,
		`switchyard_upstream_score{upstream="a"} 0.94`,
		`switchyard_retry_budget_exceeded_total 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q:\n%s", want, out)
		}
	}
	// A reload brings a new gauge set; removed upstreams have no series.
	np, err := p.Reload([]config.Upstream{{Name: "a", Quota: config.Quota{Limit: 20}}}, o)
	if err != nil {
		t.Fatal(err)
	}
	cur = np
	np.Observe("a", "m", ok(0))
	out = scrape()
	if want := `switchyard_upstream_quota_limit{upstream="a",unit="requests"} 20`; !strings.Contains(out, want) {
		t.Errorf("after reload metrics lack %q:\n%s", want, out)
	}
	if strings.Contains(out, `switchyard_upstream_breaker_state{upstream="b"}`) {
		t.Errorf("after reload, the removed upstream b still has a series:\n%s", out)
	}
}
