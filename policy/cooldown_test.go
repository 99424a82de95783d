package policy

import (
	"testing"
	"time"

	"switchyard/config"
	"switchyard/verdict"
)

func TestCooldowns(t *testing.T) {
	groqHeaders := func(remReq, remTok int64) verdict.RateLimit {
		return verdict.RateLimit{
			LimitRequests: 14400, RemainingRequests: remReq, ResetRequests: 2*time.Minute + 59560*time.Millisecond,
			LimitTokens: 18000, RemainingTokens: remTok, ResetTokens: 7660 * time.Millisecond,
			Known: true,
		}
	}
	tests := []struct {
		name   string
		quota  config.Quota
		ob     Observation
		reason string
		wait   time.Duration // Until - now; 0 = not skipped
		until  time.Time     // absolute instead of wait
	}{
		{"retry-after", config.Quota{}, Observation{Outcome: verdict.RateLimited, Status: 429, RateLimit: verdict.RateLimit{RetryAfter: 30 * time.Second, Known: true}},
			ReasonRateLimited, 30 * time.Second, time.Time{}},
		{"nothing known", config.Quota{}, Observation{Outcome: verdict.RateLimited, Status: 429},
			ReasonRateLimited, 10 * time.Second, time.Time{}},
		{"groq tokens reset beats shorter retry-after", config.Quota{}, Observation{Outcome: verdict.RateLimited, Status: 429, RateLimit: func() verdict.RateLimit {
			rl := groqHeaders(14000, 0)
			rl.RetryAfter = 2 * time.Second
			return rl
		}()}, ReasonRateLimited, 7660 * time.Millisecond, time.Time{}},
		{"groq requests per day exhausted", config.Quota{}, Observation{Outcome: verdict.RateLimited, Status: 429, RateLimit: groqHeaders(0, 18000)},
			ReasonRateLimited, 2*time.Minute + 59560*time.Millisecond, time.Time{}},
		{"ok answer with no requests left", config.Quota{}, Observation{Outcome: verdict.OK, Status: 200, RateLimit: groqHeaders(0, 17000)},
			ReasonRateLimited, 2*time.Minute + 59560*time.Millisecond, time.Time{}},
		{"ok answer with room left", config.Quota{}, Observation{Outcome: verdict.OK, Status: 200, RateLimit: groqHeaders(10, 17000)},
			"", 0, time.Time{}},
		{"huge retry-after is capped", config.Quota{}, Observation{Outcome: verdict.RateLimited, Status: 429, RateLimit: verdict.RateLimit{RetryAfter: 1000 * time.Hour, Known: true}},
			ReasonRateLimited, 24 * time.Hour, time.Time{}},
		{"402 with the default period (day)", config.Quota{}, Observation{Outcome: verdict.QuotaExhausted, Status: 402},
			ReasonQuotaExhausted, 0, time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)},
		{"402 with monthly period", config.Quota{Period: "month"}, Observation{Outcome: verdict.QuotaExhausted, Status: 402},
			ReasonQuotaExhausted, 0, time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)},
		{"402 with reset given", config.Quota{Period: "month"}, Observation{Outcome: verdict.QuotaExhausted, Status: 402, RateLimit: verdict.RateLimit{RetryAfter: 90 * time.Second, Known: true}},
			ReasonQuotaExhausted, 90 * time.Second, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock(t0)
			lb := &logBuf{}
			p := mustNew(t, []config.Upstream{{Name: "a", Quota: tt.quota}, {Name: "b"}}, testOpts(c, lb))
			p.Observe("a", "m", classified(tt.ob))
			ts := targets("m", "a", "b")
			sk := mustAdmit(t, p, ts, "a")
			if tt.reason == "" {
				if sk != nil {
					t.Fatalf("skipped: %+v", sk)
				}
				return
			}
			want := tt.until
			if want.IsZero() {
				want = t0.Add(tt.wait)
			}
			if sk == nil || sk.Reason != tt.reason || !sk.Until.Equal(want) {
				t.Fatalf("skipped = %+v, want %s until %v", sk, tt.reason, want)
			}
			st := p.Snapshot()[0]
			switch tt.reason {
			case ReasonRateLimited:
				if !st.CooldownUntil.Equal(want) {
					t.Errorf("CooldownUntil = %v", st.CooldownUntil)
				}
				// Other models of the group are not cooling down.
				if sk := mustAdmit(t, p, targets("m2", "a"), "a"); sk != nil {
					t.Errorf("model m2 skipped too: %+v", sk)
				}
			case ReasonQuotaExhausted:
				if st.Disabled != ReasonQuotaExhausted {
					t.Errorf("Disabled = %q", st.Disabled)
				}
			}
			if lb.Count("upstream cooling down")+lb.Count("disabled") != 1 {
				t.Errorf("want one log line:\n%s", lb)
			}
			c.Set(want.Add(-time.Millisecond))
			if sk := mustAdmit(t, p, ts, "a"); sk == nil {
				t.Fatalf("back before %v", want)
			}
			c.Set(want.Add(time.Millisecond))
			if sk := mustAdmit(t, p, ts, "a"); sk != nil {
				t.Fatalf("still skipped after %v: %+v", want, sk)
			}
		})
	}
}

// A later, shorter cooldown does not cut a running one short; the
// rate-limit view feeds the quota score until its reset.
func TestCooldownAndViewExpiry(t *testing.T) {
	c := newClock(t0)
	p := mustNew(t, specs("a"), testOpts(c, nil))
	p.Observe("a", "m", classified(Observation{Outcome: verdict.RateLimited, Status: 429, RateLimit: verdict.RateLimit{RetryAfter: 30 * time.Second, Known: true}}))
	p.Observe("a", "m", classified(Observation{Outcome: verdict.RateLimited, Status: 429, RateLimit: verdict.RateLimit{RetryAfter: 2 * time.Second, Known: true}}))
	if sk := mustAdmit(t, p, targets("m", "a"), "a"); sk == nil || !sk.Until.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("skipped = %+v", sk)
	}
	c.Advance(31 * time.Second)
	p.Observe("a", "m", Observation{Outcome: verdict.OK, Status: 200, RateLimit: verdict.RateLimit{
		LimitRequests: 1000, RemainingRequests: 250, ResetRequests: time.Minute,
		LimitTokens: 100, RemainingTokens: 50, ResetTokens: 10 * time.Second, Known: true}})
	quota := func() float64 {
		ranked, _ := p.Rank(targets("m", "a"))
		return ranked[0].Quota
	}
	if q := quota(); q != 0.25 {
		t.Fatalf("quota = %v, want 0.25 (requests)", q)
	}
	// Headers with only tokens keep the requests view.
	p.Observe("a", "m", Observation{Outcome: verdict.OK, Status: 200, RateLimit: verdict.RateLimit{
		LimitTokens: 100, RemainingTokens: 10, ResetTokens: 10 * time.Second, Known: true}})
	if q := quota(); q != 0.1 {
		t.Fatalf("quota = %v, want 0.1 (tokens)", q)
	}
	c.Advance(11 * time.Second) // tokens window reset
	if q := quota(); q != 0.25 {
		t.Fatalf("quota = %v, want 0.25 after the tokens reset", q)
	}
	c.Advance(time.Minute) // requests window reset
	if q := quota(); q != 1 {
		t.Fatalf("quota = %v, want 1 after both resets", q)
	}
}
