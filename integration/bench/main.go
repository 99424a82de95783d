// Command bench is Switchyard's performance harness (issue 6). One run
// builds the switchyard binary from the tree and starts, all on 127.0.0.1:
//
//   - a fake OpenAI-compatible upstream (fasthttp; a fixed ~400-byte answer,
//     optional fixed latency; streams of -events events);
//   - a bare fasthttp pass-through reverse proxy (fasthttp.HostClient
//     forwarding request and body): the floor any proxy pays;
//   - switchyard with the embedded cache (log_level warn, so per-request
//     log lines do not dominate; one extra run at info measures them), and,
//     when the memcached binary exists, two more sharing one memcached on a
//     free port: one with the default configuration (the near cache in
//     front of memcached) and one with cache.near_max_bytes: 0 (every hit
//     a memcached round trip);
//
// and drives each with the same closed-loop load from an in-process
// fasthttp load generator. Scenarios: (a) cache bypassed (Cache-Control:
// no-store) against the direct upstream and the bare pass-through; (b)
// cache hits, embedded; (c) cache hits, memcached, with and without the
// near cache, and the memcached requests one miss and one hit cost (from
// switchyard_cache_memcached_ops_total, near cache off); (d) streaming: time to
// first event below saturation (d1) and events/s at saturation (d2); (e)
// -streams concurrent open streams from a slow upstream (RSS, Go heap and
// stacks, goroutines, errors); (f) embeddings cache hits, embedded cache,
// against the fake's /v1/embeddings directly (a base64 1536-dimension
// answer, what the SDKs ask for by default). Every run prints requests/s, latency
// percentiles, errors, the proxy's CPU seconds (/proc/<pid>/stat) and peak
// RSS (VmHWM, reset before each run), the upstream connections the run
// opened, and how busy the machine was and with what else; the end is a
// table of ratios measured in this same run next to the targets.
//
//	make bench                                  (go run ./integration/bench -duration 10s, ~2 min)
//	go run ./integration/bench -duration 5s -streams 2000
//	go run ./integration/bench -scenarios d -bin /tmp/switchyard-patched   (A/B a change)
//	go run ./integration/bench -scenarios ab -profile /tmp/prof            (CPU profile of each run)
//	go tool pprof -top /tmp/prof/cpu-switchyard-no-store-bypass.pprof
//
// -profile DIR builds switchyard with -tags pprof (main_pprof.go) and starts
// every switchyard with SWITCHYARD_PPROF on a free port of its own; each run
// through switchyard then writes DIR/cpu-<run>.pprof (a CPU profile over the
// measured run) and scenario (e) DIR/heap-streams.pprof (the heap when the
// streams are at their peak). The profiler's own cost is in the figures of
// such a run; compare profiled runs with profiled runs only.
//
// The load generator, the upstream and the proxy share the machine's cores:
// absolute numbers are noise; the ratios are the result. Runs during which
// other processes used more than 5% of the machine are marked NOISY.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "-role" {
		os.Exit(runRole(os.Args[2], os.Args[3:]))
	}
	os.Exit(bench(os.Args[1:], os.Stdout))
}

type options struct {
	duration   time.Duration
	warmup     time.Duration
	conc       int
	streamConc int
	events     int
	interval   time.Duration
	latency    time.Duration
	streams    int
	ramp       time.Duration
	hold       time.Duration
	memcached  string
	scenarios  string
	directHold bool
	logInfo    bool
	bin        string
	profile    string
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time of each closed-loop run (streaming runs use half)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each run")
	fs.IntVar(&o.conc, "c", 64, "closed-loop workers (connections) of the load generator")
	fs.IntVar(&o.streamConc, "stream-c", 16, "workers of the paced streaming run (time to first event is measured below saturation)")
	fs.IntVar(&o.events, "events", 20, "data events per stream")
	fs.DurationVar(&o.interval, "event-interval", 2*time.Millisecond, "delay between events in the paced streaming run")
	fs.DurationVar(&o.latency, "upstream-latency", 0, "fixed latency of the fake upstream (plain answers and first events)")
	fs.IntVar(&o.streams, "streams", 5000, "concurrent open streams of scenario (e); 0 skips it")
	fs.DurationVar(&o.ramp, "ramp", 2*time.Second, "scenario (e): streams are opened evenly over this time")
	fs.DurationVar(&o.hold, "hold", 5*time.Second, "scenario (e): how long each stream stays open")
	fs.StringVar(&o.memcached, "memcached", "memcached", "memcached binary for scenario (c); \"\" skips it")
	fs.StringVar(&o.scenarios, "scenarios", "abcdef", "scenarios to run")
	fs.StringVar(&o.bin, "bin", "", "run this switchyard binary instead of building the tree (A/B runs of a change)")
	fs.StringVar(&o.profile, "profile", "", "write pprof profiles of switchyard into this directory: a CPU profile of every run through it "+
		"(cpu-<run>.pprof) and the heap at the peak of scenario (e) (heap-streams.pprof); builds switchyard with -tags pprof "+
		"(a -bin binary must have been built so); the profiler's cost is in the figures")
	fs.BoolVar(&o.logInfo, "log-info", true, "scenario (a): also run switchyard at log_level info (its default; stderr to a pipe drained by cat, like a log driver)")
	fs.BoolVar(&o.directHold, "hold-direct", true, "scenario (e): also hold the streams against the fake directly (checks the load generator)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.conc < 1 || o.streamConc < 1 || o.duration <= 0 || o.events < 1 {
		return o, fmt.Errorf("-c, -stream-c, -events must be >= 1 and -duration > 0")
	}
	return o, nil
}

// chatBody is a typical short chat request (~430 bytes).
func chatBody(model string, stream bool) []byte {
	s := `{"model":"` + model + `","messages":[{"role":"system","content":"You are a concise assistant. Answer in one short paragraph and do not use lists."},` +
		`{"role":"user","content":"Explain in two sentences why a sidecar proxy in front of an LLM API should add as little latency as possible, and what it can cache."}],` +
		`"temperature":0,"max_tokens":128`
	if stream {
		s += `,"stream":true`
	}
	return []byte(s + "}")
}

var noStore = [][2]string{{"Cache-Control", "no-store"}}

// embeddingsBody is a typical embeddings request of an SDK: one sentence,
// base64 (the default of the openai Python and Node SDKs).
var embeddingsBody = []byte(`{"model":"text-embedding-3-small","input":"A sidecar proxy in front of an LLM API answers repeated embeddings from its cache.","encoding_format":"base64"}`)

// measured is one closed-loop run with the CPU and memory it cost.
type measured struct {
	label     string
	res       *result
	proxyCPU  float64 // -1: no proxy in the path
	fakeCPU   float64
	selfCPU   float64
	extraCPU  float64 // memcached, -1 if none
	hwmMB     float64 // proxy's peak RSS during the run (-1: none)
	hwmReset  bool
	streaming bool
	hostBusy  float64 // % of all CPUs busy during the run
	upConns   int64   // connections the fake upstream accepted during the run
	otherCPU  float64 // CPU seconds of processes outside the harness
	capacity  float64 // CPU seconds the machine had during the run
	profile   string  // -profile: where the proxy's CPU profile went, or why not ("": none taken)
}

// noisy reports that other work used more than 5% of the machine.
func (m *measured) noisy() bool { return m.capacity > 0 && m.otherCPU/m.capacity > 0.05 }

func (m *measured) cpuPerReq() float64 {
	if m.proxyCPU < 0 || m.res.ok == 0 {
		return -1
	}
	return m.proxyCPU / float64(m.res.ok) * 1e6
}

// measure runs a warm-up, then j, with CPU deltas of the processes on the
// path. target is the proxy (nil: the load goes to the fake directly). When
// target serves pprof (-profile), a CPU profile of it is taken over the
// measured run.
func measure(label string, j job, warmup time.Duration, target, fake, extra *proc) *measured {
	if warmup > 0 {
		w := j
		w.dur = warmup
		run(w)
	}
	m := &measured{label: label, proxyCPU: -1, extraCPU: -1, hwmMB: -1, streaming: j.stream}
	cpu := func(p *proc) float64 {
		if p == nil {
			return 0
		}
		s, _ := cpuSeconds(p.pid())
		return s
	}
	self := func() float64 {
		s, _ := cpuSeconds(os.Getpid())
		return s
	}
	if target != nil {
		m.hwmReset = resetHWM(target.pid())
	}
	n0 := upstreamConns(fake.addr)
	t0, f0, s0, e0 := cpu(target), cpu(fake), self(), cpu(extra)
	hp0, hb0, ht0 := hostCPU()
	prof := startCPUProfile(label, j.dur, target)
	m.res = run(j)
	hp1, hb1, ht1 := hostCPU()
	t1, f1, s1, e1 := cpu(target), cpu(fake), self(), cpu(extra)
	if prof != nil {
		m.profile = prof()
	}
	if n1 := upstreamConns(fake.addr); n0 >= 0 && n1 >= n0 {
		m.upConns = n1 - n0
	}
	if ht1 > ht0 {
		m.hostBusy = (hb1 - hb0) / (ht1 - ht0) * 100
		// Whatever else ran on the machine: process time the harness's
		// processes do not account for.
		m.otherCPU = max((hp1-hp0)-((t1-t0)+(f1-f0)+(s1-s0)+(e1-e0)), 0)
		m.capacity = ht1 - ht0
	}
	m.fakeCPU, m.selfCPU = f1-f0, s1-s0
	if target != nil {
		m.proxyCPU = t1 - t0
		_, hwm := memKB(target.pid())
		m.hwmMB = float64(hwm) / 1024
	}
	if extra != nil {
		m.extraCPU = e1 - e0
	}
	return m
}

// startCPUProfile, when target serves pprof and -profile is set, starts
// fetching a CPU profile of target over the next dur (whole seconds, at
// least 1) into profileDir/cpu-<slug of label>.pprof. The function it
// returns waits for the fetch (at most dur+15s) and returns the note to
// print. nil: no profile.
func startCPUProfile(label string, dur time.Duration, target *proc) func() string {
	if profileDir == "" || target == nil || target.pprof == "" {
		return nil
	}
	secs := max(int(dur/time.Second), 1)
	file := filepath.Join(profileDir, "cpu-"+slug(label)+".pprof")
	done := make(chan error, 1)
	go func() {
		done <- fetchProfile(target.pprof, fmt.Sprintf("profile?seconds=%d", secs), file, dur+15*time.Second)
	}()
	return func() string { return profileNote(file, <-done) }
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/1e6) }

func num(v float64, format string) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func printRuns(w io.Writer, title string, runs []*measured) {
	fmt.Fprintf(w, "\n%s\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	stream := len(runs) > 0 && runs[0].streaming
	if stream {
		fmt.Fprintln(tw, "run\treq/s\tp50 ms\tp90 ms\tp99 ms\tTTFE p50 ms\tTTFE p99 ms\tevents/s\terrors\tproxy CPU s\tproxy µs/req\tpeak RSS MB\tupstream CPU s\tloadgen CPU s\tupstream conns\thost busy %\tother procs CPU s\t")
	} else {
		fmt.Fprintln(tw, "run\treq/s\tp50 ms\tp90 ms\tp99 ms\terrors\tproxy CPU s\tproxy µs/req\tpeak RSS MB\tupstream CPU s\tloadgen CPU s\tmemcached CPU s\tupstream conns\thost busy %\tother procs CPU s\t")
	}
	for _, m := range runs {
		r := m.res
		if stream {
			fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.0f\t%d\t%s\t%s\t%s\t%.2f\t%.2f\t%d\t%.0f\t%.2f\t\n", m.label, r.rps(),
				ms(pct(r.lat, .5)), ms(pct(r.lat, .9)), ms(pct(r.lat, .99)), ms(pct(r.ttfe, .5)), ms(pct(r.ttfe, .99)),
				float64(r.events)/r.elapsed.Seconds(), r.errs, num(m.proxyCPU, "%.2f"), num(m.cpuPerReq(), "%.1f"),
				num(m.hwmMB, "%.1f"), m.fakeCPU, m.selfCPU, m.upConns, m.hostBusy, m.otherCPU)
		} else {
			fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%.2f\t%.2f\t%s\t%d\t%.0f\t%.2f\t\n", m.label, r.rps(),
				ms(pct(r.lat, .5)), ms(pct(r.lat, .9)), ms(pct(r.lat, .99)), r.errs, num(m.proxyCPU, "%.2f"),
				num(m.cpuPerReq(), "%.1f"), num(m.hwmMB, "%.1f"), m.fakeCPU, m.selfCPU, num(m.extraCPU, "%.2f"), m.upConns, m.hostBusy, m.otherCPU)
		}
	}
	_ = tw.Flush()
	for _, m := range runs {
		if m.res.errs > 0 {
			fmt.Fprintf(w, "  errors of %s: %s\n", m.label, m.res.topErrors(3))
		}
		if m.noisy() {
			fmt.Fprintf(w, "  NOISY: during %s other processes used %.1f of the machine's %.1f CPU seconds (%.0f%%); its figures are distorted\n",
				m.label, m.otherCPU, m.capacity, m.otherCPU/m.capacity*100)
		}
		if m.proxyCPU >= 0 && !m.hwmReset {
			fmt.Fprintf(w, "  note: could not reset VmHWM of %s; its peak RSS is the process's peak so far\n", m.label)
		}
		if m.profile != "" {
			fmt.Fprintf(w, "  CPU profile of %s: %s\n", m.label, m.profile)
		}
	}
}

// noiseTag marks a verdict whose runs other processes disturbed.
func noiseTag(ms ...*measured) string {
	for _, m := range ms {
		if m != nil && m.noisy() {
			return " (noisy run)"
		}
	}
	return ""
}

// ratio is one row of the final table.
type ratio struct {
	what, measured, target string
	met                    string // "met", "MISSED", "n/a"
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func bench(args []string, w io.Writer) int {
	o, err := parseFlags(args)
	if err != nil {
		return 2
	}
	began := time.Now()
	tmp, err := os.MkdirTemp("", "switchyard-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	defer stopChildren()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "interrupted: stopping the processes")
		stopChildren()
		os.RemoveAll(tmp)
		os.Exit(130)
	}()
	want := func(s byte) bool { return strings.IndexByte(o.scenarios, s) >= 0 }
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "-profile:", err)
			return 1
		}
		profileDir = o.profile
	}

	nofile := raiseNofile()
	fmt.Fprintf(w, "switchyard bench: %d CPUs, GOMAXPROCS %d, %s %s/%s, open files limit %d\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, nofile)
	fmt.Fprintf(w, "CAVEAT: the load generator, the fake upstream, the proxy under test (and memcached) share these %d cores; "+
		"absolute figures are noise, compare the ratios.\n", runtime.NumCPU())
	fmt.Fprintf(w, "load: closed loop, %d connections, %v per run after %v warm-up; streams: %d events; switchyard log_level: warn "+
		"(at info, the default, every request writes a JSON log line: one extra run in (a) measures that)\n", o.conc, o.duration, o.warmup, o.events)
	if need := uint64(2*o.streams + 1024); want('e') && o.streams > 0 && nofile < need {
		fmt.Fprintf(w, "WARNING: open files limit %d < %d needed by switchyard for %d streams (ulimit -Hn)\n", nofile, need, o.streams)
	}

	bin := o.bin
	if bin == "" {
		t := time.Now()
		if bin, err = buildSwitchyard(tmp, profileDir != ""); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(w, "built switchyard in %.1fs\n", time.Since(t).Seconds())
	} else {
		fmt.Fprintf(w, "switchyard binary: %s (not built from the tree)\n", bin)
		if profileDir != "" {
			fmt.Fprintln(w, "-profile with -bin: the binary must have been built with -tags pprof (go build -tags pprof), else no profiles")
		}
	}

	fake, err := startRole("fake", "-latency", o.latency.String(), "-events", fmt.Sprint(o.events),
		"-event-interval", o.interval.String(), "-hold", o.hold.String())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pass, err := startRole("passthrough", "-upstream", fake.addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sy, err := startSwitchyard("switchyard", bin, tmp, switchyardConfig(fake.addr, "", "warn", false), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	time.Sleep(500 * time.Millisecond)
	idleKB, _ := memKB(sy.pid())
	fmt.Fprintf(w, "processes: fake upstream %s (pid %d), pass-through %s (pid %d), switchyard %s (pid %d, idle RSS %.1f MB)\n",
		fake.addr, fake.pid(), pass.addr, pass.pid(), sy.addr, sy.pid(), float64(idleKB)/1024)
	switch {
	case profileDir != "" && sy.pprof != "":
		fmt.Fprintf(w, "profiling: switchyard serves pprof on %s; profiles go to %s (figures include the profiler's cost)\n", sy.pprof, profileDir)
	case profileDir != "":
		fmt.Fprintln(w, "WARNING: -profile: switchyard does not serve pprof on SWITCHYARD_PPROF (built without -tags pprof?): no profiles")
	}

	p0, _, c0 := hostCPU()
	time.Sleep(time.Second)
	p1, _, c1 := hostCPU()
	if c1 > c0 {
		// The harness's own processes are idle now: this is other work.
		other := (p1 - p0) / (c1 - c0) * 100
		fmt.Fprintf(w, "machine load before the runs: %.0f%% of all CPUs busy in processes", other)
		if other > 5 {
			fmt.Fprint(w, " -- WARNING: other work is running; it distorts the figures (see \"other procs CPU s\")")
		}
		fmt.Fprintln(w)
	}

	// syMC runs the default configuration (near cache on), syMCRT the
	// same with cache.near_max_bytes: 0 (every hit a memcached round trip).
	var mc, syMC, syMCRT *proc
	if want('c') && o.memcached != "" {
		if path, err := exec.LookPath(o.memcached); err != nil {
			fmt.Fprintf(w, "memcached binary %q not found: scenario (c) skipped\n", o.memcached)
		} else if mc, err = startMemcached(path); err != nil {
			fmt.Fprintln(w, "memcached:", err, "- scenario (c) skipped")
			mc = nil
		} else if syMC, err = startSwitchyard("switchyard-memcached", bin, tmp, switchyardConfig(fake.addr, mc.addr, "warn", false), nil); err != nil {
			fmt.Fprintln(w, "switchyard with memcached:", err, "- scenario (c) skipped")
			syMC = nil
		} else {
			fmt.Fprintf(w, "memcached %s (pid %d), switchyard-memcached %s (pid %d, near cache on)", mc.addr, mc.pid(), syMC.addr, syMC.pid())
			if syMCRT, err = startSwitchyard("switchyard-memcached-no-near", bin, tmp, switchyardConfig(fake.addr, mc.addr, "warn", true), nil); err != nil {
				fmt.Fprintf(w, "\nswitchyard with memcached, near cache off: %v - that run of (c) skipped\n", err)
				syMCRT = nil
			} else {
				fmt.Fprintf(w, ", switchyard-memcached-no-near %s (pid %d, near_max_bytes: 0)\n", syMCRT.addr, syMCRT.pid())
			}
		}
	}

	plain := chatBody("bench", false)
	direct := func() job {
		return job{addr: fake.addr, body: plain, headers: noStore, conc: o.conc, dur: o.duration}
	}
	var (
		rDirect, rPass, rBypass, rHit, rHitMC *measured
		rHitMCRT                              *measured
		rEmbDirect, rEmbHit                   *measured
		trips                                 *roundTrips
		tripsErr                              error
		rBypassInfo                           *measured
		rSDirectPaced, rSPaced                *measured
		rSDirect, rSProxied                   *measured
		hold                                  *holdResult
		holdDirect                            *holdResult
		holdIdleKB                            int64
	)

	if want('a') || want('b') || want('c') {
		rDirect = measure("direct upstream", direct(), o.warmup, nil, fake, nil)
	}
	if want('a') {
		j := direct()
		j.addr = pass.addr
		rPass = measure("bare fasthttp pass-through", j, o.warmup, pass, fake, nil)
		j.addr = sy.addr
		rBypass = measure("switchyard, no-store (bypass)", j, o.warmup, sy, fake, nil)
		runs := []*measured{rDirect, rPass, rBypass}
		if o.logInfo {
			if logs, stopDrain, err := logPipe(); err != nil {
				fmt.Fprintln(w, "(a) log_level info run skipped:", err)
			} else if syInfo, err := startSwitchyard("switchyard-info", bin, tmp, switchyardConfig(fake.addr, "", "info", false), logs); err != nil {
				stopDrain()
				fmt.Fprintln(w, "(a) log_level info run skipped:", err)
			} else {
				j.addr = syInfo.addr
				rBypassInfo = measure("switchyard, no-store, log_level info", j, o.warmup, syInfo, fake, nil)
				runs = append(runs, rBypassInfo)
				syInfo.stop()
				stopDrain()
			}
		}
		printRuns(w, "(a) pure proxy overhead: same request, Cache-Control: no-store", runs)
	}
	if want('b') {
		j := job{addr: sy.addr, body: plain, conc: o.conc, dur: o.duration, wantHit: true}
		if err := warmCache(sy.addr, plain); err != nil {
			fmt.Fprintln(w, "(b) warming the cache:", err)
		}
		rHit = measure("switchyard, cache hit (embedded)", j, o.warmup, sy, fake, nil)
		runs := []*measured{rDirect, rHit}
		printRuns(w, "(b) cache hits, embedded cache (vs the direct fake upstream)", runs)
	}
	if want('c') && syMC != nil {
		j := job{addr: syMC.addr, body: plain, conc: o.conc, dur: o.duration, wantHit: true}
		if err := warmCache(syMC.addr, plain); err != nil {
			fmt.Fprintln(w, "(c) warming the cache:", err)
		}
		rHitMC = measure("switchyard, cache hit (memcached + near cache)", j, o.warmup, syMC, fake, mc)
		runs := []*measured{rDirect, rHitMC}
		if syMCRT != nil {
			j.addr = syMCRT.addr
			if err := warmCache(syMCRT.addr, plain); err != nil {
				fmt.Fprintln(w, "(c) warming the cache, near cache off:", err)
			}
			rHitMCRT = measure("switchyard, cache hit (memcached round trip, near cache off)", j, o.warmup, syMCRT, fake, mc)
			runs = append(runs, rHitMCRT)
		}
		printRuns(w, "(c) cache hits, memcached on loopback, default config (near cache) and near_max_bytes: 0 (vs the direct fake upstream)", runs)
		trips, tripsErr = roundTripsRun(bin, tmp, fake.addr, mc.addr, 200)
		if tripsErr != nil {
			fmt.Fprintln(w, "(c) memcached round trips:", tripsErr)
		} else {
			fmt.Fprintf(w, "(c) memcached requests (switchyard_cache_memcached_ops_total) of a switchyard with near_max_bytes: 0 and a tokens quota, "+
				"%d misses then the same %d as hits, one at a time:\n  per miss: %.2f (%s)\n  per hit:  %.2f (%s)\n",
				trips.n, trips.n, sum(trips.perMiss), breakdown(trips.perMiss), sum(trips.perHit), breakdown(trips.perHit))
		}
	}
	if want('f') {
		j := job{addr: fake.addr, path: "/v1/embeddings", body: embeddingsBody, conc: o.conc, dur: o.duration}
		rEmbDirect = measure("direct upstream, embeddings", j, o.warmup, nil, fake, nil)
		j.addr, j.wantHit = sy.addr, true
		if err := warmJob(j); err != nil {
			fmt.Fprintln(w, "(f) warming the cache:", err)
		}
		rEmbHit = measure("switchyard, embeddings cache hit (embedded)", j, o.warmup, sy, fake, nil)
		printRuns(w, fmt.Sprintf("(f) embeddings cache hits, embedded cache (one %d-dimension vector in base64, ~%.1f KB; vs the direct fake upstream)",
			embedDims, float64(4*embedDims*4/3+150)/1024),
			[]*measured{rEmbDirect, rEmbHit})
	}
	if want('d') {
		half := max(o.duration/2, 2*time.Second)
		paced := chatBody("bench-paced", true)
		j := job{addr: fake.addr, body: paced, headers: noStore, conc: o.streamConc, dur: half, stream: true, wantEvents: o.events}
		rSDirectPaced = measure("direct, paced", j, o.warmup, nil, fake, nil)
		j.addr = sy.addr
		rSPaced = measure("switchyard, paced", j, o.warmup, sy, fake, nil)
		printRuns(w, fmt.Sprintf("(d1) streaming, %d events %v apart, %d concurrent streams (below saturation): time to first event",
			o.events, o.interval, o.streamConc), []*measured{rSDirectPaced, rSPaced})
		fast := chatBody("bench", true)
		j = job{addr: fake.addr, body: fast, headers: noStore, conc: o.conc, dur: half, stream: true, wantEvents: o.events}
		rSDirect = measure("direct, saturating", j, o.warmup, nil, fake, nil)
		j.addr = sy.addr
		rSProxied = measure("switchyard, saturating", j, o.warmup, sy, fake, nil)
		printRuns(w, fmt.Sprintf("(d2) streaming, %d events back to back, %d connections (saturation): events/s", o.events, o.conc),
			[]*measured{rSDirect, rSProxied})
	}
	// Free what earlier scenarios hold before the streams scenario.
	sy.stop()
	if syMC != nil {
		syMC.stop()
	}
	if syMCRT != nil {
		syMCRT.stop()
	}
	if mc != nil {
		mc.stop()
	}
	pass.stop()

	if want('e') && o.streams > 0 {
		body := chatBody("bench-hold", true)
		fmt.Fprintf(w, "\n(e) %d concurrent open streams (opened over %v, each open ~%v; the fake sends one event a second)\n",
			o.streams, o.ramp, o.hold)
		if o.directHold {
			holdDirect = holdStreams(fake.addr, body, noStore, o.streams, o.ramp, o.hold, fake.pid(), "", nil)
			printHold(w, "direct to the fake upstream (fake's RSS)", holdDirect)
		}
		sy2, err := startSwitchyard("switchyard-streams", bin, tmp, switchyardConfig(fake.addr, "", "warn", false), nil)
		if err != nil {
			fmt.Fprintln(w, "(e):", err)
		} else {
			time.Sleep(500 * time.Millisecond)
			holdIdleKB, _ = memKB(sy2.pid())
			resetHWM(sy2.pid())
			c0, _ := cpuSeconds(sy2.pid())
			atPeak, heapNote := heapAtPeak(sy2)
			hold = holdStreams(sy2.addr, body, noStore, o.streams, o.ramp, o.hold, sy2.pid(), sy2.addr, atPeak)
			c1, _ := cpuSeconds(sy2.pid())
			printHold(w, fmt.Sprintf("through switchyard (fresh process, idle RSS %.1f MB; CPU %.2fs)", float64(holdIdleKB)/1024, c1-c0), hold)
			if atPeak != nil {
				fmt.Fprintf(w, "  heap profile at the peak: %s\n", *heapNote)
			}
			if hold.peakOpen > 0 {
				per := float64(hold.rssAtPeak-holdIdleKB) / float64(hold.peakOpen)
				fmt.Fprintf(w, "  switchyard RSS per open stream: %.1f KB; %d streams would need ~%.0f MB", per, o.streams,
					(float64(holdIdleKB)+per*float64(o.streams))/1024)
				if hold.goroutines > 0 && hold.openAtScrape > 0 {
					fmt.Fprintf(w, "; goroutines per open stream: %.2f", float64(hold.goroutines)/float64(hold.openAtScrape))
				}
				fmt.Fprintln(w)
			}
			if strings.Contains(sy2.logs.String(), "no free connections") || strings.Contains(topN(hold.errKind, 5), "no free connections") {
				fmt.Fprintln(w, "  FINDING: switchyard's upstream client ran out of connections (fasthttp.ErrNoFreeConns): "+
					"the stream HostClient's MaxConns/MaxConnWaitTimeout in upstream.New cap concurrent streams per upstream.")
			}
			sy2.stop()
		}
	}

	// Final table.
	var rows []ratio
	if rBypass != nil && rPass != nil {
		tr := rBypass.res.rps() / rPass.res.rps()
		rows = append(rows, ratio{"proxied throughput / bare pass-through (bypass)", fmt.Sprintf("%.2f", tr), "≥ 0.90", verdict(tr >= 0.90) + noiseTag(rBypass, rPass)})
		pr := float64(pct(rBypass.res.lat, .99)) / float64(pct(rPass.res.lat, .99))
		rows = append(rows, ratio{"proxied p99 / bare pass-through p99", fmt.Sprintf("%.2f", pr), "≤ 1.2", verdict(pr <= 1.2) + noiseTag(rBypass, rPass)})
		cpr := rBypass.cpuPerReq()
		rows = append(rows, ratio{"proxy CPU per proxied request at saturation", fmt.Sprintf("%.1f µs (pass-through: %.1f µs)", cpr, rPass.cpuPerReq()),
			"≤ 25 µs", verdict(cpr <= 25) + noiseTag(rBypass)})
	}
	if rBypassInfo != nil && rBypass != nil {
		rows = append(rows, ratio{"log_level info (default) vs warn: CPU per proxied request", fmt.Sprintf("%+.1f µs (%.1f µs), throughput ×%.2f",
			rBypassInfo.cpuPerReq()-rBypass.cpuPerReq(), rBypassInfo.cpuPerReq(), rBypassInfo.res.rps()/rBypass.res.rps()), "(info)", "n/a" + noiseTag(rBypassInfo, rBypass)})
	}
	if rHit != nil && rDirect != nil {
		r := rHit.res.rps() / rDirect.res.rps()
		rows = append(rows, ratio{"cache-hit throughput / direct upstream, embedded", fmt.Sprintf("%.2f (%.1f µs CPU/hit)", r, rHit.cpuPerReq()), "≥ 0.90", verdict(r >= 0.90 && rHit.res.errs == 0) + noiseTag(rHit, rDirect)})
	}
	if rHitMC != nil && rDirect != nil {
		r := rHitMC.res.rps() / rDirect.res.rps()
		rows = append(rows, ratio{"cache-hit throughput / direct upstream, memcached", fmt.Sprintf("%.2f (%.1f µs CPU/hit)", r, rHitMC.cpuPerReq()), "≥ 0.60", verdict(r >= 0.60 && rHitMC.res.errs == 0) + noiseTag(rHitMC, rDirect)})
	} else if want('c') {
		rows = append(rows, ratio{"cache-hit throughput / direct upstream, memcached", "not run", "≥ 0.60", "n/a"})
	}
	if rHitMCRT != nil && rDirect != nil {
		r := rHitMCRT.res.rps() / rDirect.res.rps()
		rows = append(rows, ratio{"cache-hit throughput / direct upstream, memcached round trip (near cache off)",
			fmt.Sprintf("%.2f (%.1f µs CPU/hit)", r, rHitMCRT.cpuPerReq()), "(info)", "n/a" + noiseTag(rHitMCRT, rDirect)})
	}
	if rEmbHit != nil && rEmbDirect != nil {
		r := rEmbHit.res.rps() / rEmbDirect.res.rps()
		rows = append(rows, ratio{"embeddings cache-hit throughput / direct upstream, embedded",
			fmt.Sprintf("%.2f (p50 %s ms vs %s ms direct; %.1f µs CPU/hit)", r, ms(pct(rEmbHit.res.lat, .5)), ms(pct(rEmbDirect.res.lat, .5)), rEmbHit.cpuPerReq()),
			"(info, issue 13)", "n/a" + noiseTag(rEmbHit, rEmbDirect)})
	}
	if trips != nil {
		rows = append(rows, ratio{"memcached round trips per miss / per hit (near cache off, quota)", trips.String(), "(info: was 1 get + 1 set + 1 incr per miss)", "n/a"})
	} else if want('c') {
		rows = append(rows, ratio{"memcached round trips per miss / per hit (near cache off, quota)", "not run", "(info)", "n/a"})
	}
	if rSPaced != nil && rSDirectPaced != nil {
		a99 := pct(rSPaced.res.ttfe, .99) - pct(rSDirectPaced.res.ttfe, .99)
		a50 := pct(rSPaced.res.ttfe, .5) - pct(rSDirectPaced.res.ttfe, .5)
		rows = append(rows, ratio{"streaming: added time to first event, p99 (p50)", fmt.Sprintf("%s ms (%s ms)", ms(a99), ms(a50)), "≤ 1 ms",
			verdict(a99 <= time.Millisecond && rSPaced.res.errs == 0) + noiseTag(rSPaced, rSDirectPaced)})
	}
	if rSProxied != nil && rSDirect != nil {
		er := (float64(rSProxied.res.events) / rSProxied.res.elapsed.Seconds()) / (float64(rSDirect.res.events) / rSDirect.res.elapsed.Seconds())
		rows = append(rows, ratio{"streaming events/s, proxied / direct (saturation)", fmt.Sprintf("%.2f", er), "(info)", "n/a" + noiseTag(rSProxied, rSDirect)})
	}
	if rSProxied != nil && rSProxied.res.ok > 0 {
		per := float64(rSProxied.upConns) / float64(rSProxied.res.ok)
		v := "n/a"
		if per > 0.1 {
			v = "FINDING: streams do not reuse upstream connections"
		}
		rows = append(rows, ratio{"new upstream connections per proxied stream (d2)", fmt.Sprintf("%.2f (%d for %d streams)", per, rSProxied.upConns, rSProxied.res.ok), "(info: ≈ 0 with keep-alive)", v})
	}
	if hold != nil {
		rss := float64(max(hold.rssAtPeak, hold.hwm)) / 1024
		ok := hold.errs == 0 && !hold.stuck && hold.completed == hold.n && rss <= 250
		rows = append(rows, ratio{fmt.Sprintf("%d concurrent open streams: RSS, errors", o.streams),
			fmt.Sprintf("%.0f MB peak at %d open, %d errors, %d goroutines", rss, hold.peakOpen, hold.errs, hold.goroutines), "≤ 250 MB, no errors", verdict(ok)})
	}
	if idleKB > 0 {
		rows = append(rows, ratio{"idle RSS (fresh switchyard)", fmt.Sprintf("%.1f MB", float64(idleKB)/1024), "≤ 30 MB", verdict(float64(idleKB)/1024 <= 30)})
	}
	rows = append(rows, ratio{"allocations per cache hit / proxied request", "go test -run '^$' -bench . -benchmem ./proxy", "≤ 20 / ≤ 40", "n/a"})

	fmt.Fprintf(w, "\nRATIOS (all from this run; targets from issue 6)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "what\tmeasured\ttarget\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.what, r.measured, r.target, r.met)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\ntotal %.0fs. CAVEAT: %d cores shared by load generator, upstream and proxy; switchyard ran at log_level warn except where noted.\n",
		time.Since(began).Seconds(), runtime.NumCPU())
	return 0
}

// heapAtPeak, when p serves pprof (-profile), returns the holdStreams hook
// that writes p's heap profile to profileDir/heap-streams.pprof, and the
// note it leaves (valid once holdStreams returned). nil: no profile.
func heapAtPeak(p *proc) (func(), *string) {
	note := "not taken: the streams ended before their peak"
	if profileDir == "" || p.pprof == "" {
		return nil, &note
	}
	file := filepath.Join(profileDir, "heap-streams.pprof")
	return func() { note = profileNote(file, fetchProfile(p.pprof, "heap?gc=1", file, 15*time.Second)) }, &note
}

func printHold(w io.Writer, label string, h *holdResult) {
	fmt.Fprintf(w, "  %s: %d/%d got a first event, %d completed, peak %d open, RSS at peak %.1f MB, VmHWM %.1f MB",
		label, h.opened, h.n, h.completed, h.peakOpen, float64(h.rssAtPeak)/1024, float64(h.hwm)/1024)
	if h.goroutines >= 0 {
		fmt.Fprintf(w, ", go_goroutines %d, Go heap in use %.1f MB, goroutine stacks %.1f MB (with %d open)",
			h.goroutines, h.heapInuse/(1<<20), h.stackInuse/(1<<20), h.openAtScrape)
	}
	fmt.Fprintf(w, ", %d errors, %.1fs\n", h.errs, h.elapsed.Seconds())
	if h.errs > 0 {
		fmt.Fprintf(w, "    errors: %s\n", topN(h.errKind, 3))
	}
	if h.stuck {
		fmt.Fprintln(w, "    WARNING: some streams did not end within ramp+hold+30s")
	}
}

func topN(m map[string]int, n int) string {
	r := &result{errKind: m}
	return r.topErrors(n)
}

// warmCache sends a chat request until switchyard answers it from the
// cache (the store is asynchronous), for at most 5 s.
func warmCache(addr string, body []byte) error { return warmJob(job{addr: addr, body: body}) }

// warmJob is warmCache for j's path and body.
func warmJob(j job) error {
	hc := newClient(j.addr, 1, 10*time.Second)
	defer hc.CloseIdleConnections()
	j.headers = nil
	var last error
	for range 100 {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		j.request(req)
		last = doPlain(hc, req, resp, true)
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		if last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return last
}

// logPipe returns the write end of a pipe that a cat process drains, the
// way a container runtime's log driver reads a container's stderr, and a
// func that closes it and waits for cat. (Writing to /dev/null would make
// a log line's write syscall look free.)
func logPipe() (*os.File, func(), error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cat := exec.Command("cat")
	cat.Stdin = r
	if err := cat.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, nil, fmt.Errorf("log drain: %w", err)
	}
	r.Close()
	return w, func() { w.Close(); _ = cat.Wait() }, nil
}
