package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"switchyard/integration/testproc"
)

// TestLargePlainAnswersHeldOnce: 4 concurrent 30 MB plain answers, with
// GOMEMLIMIT=200MiB as in the Kubernetes example, keep the proxy's peak
// RSS within 1.5 × the answers in flight plus its baseline. (Each answer
// used to be held three times: fasthttp's buffer, a copy out of it, and
// the client response's copy: 412 MB peak, 261 MB with the limit.)
//
// It runs its own binary built without the race detector, whose shadow
// memory would swamp the figure.
func TestLargePlainAnswersHeldOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary and moves 240 MB")
	}
	const size, clients = 30 << 20, 4
	body := []byte(fmt.Sprintf(`{"id":"chatcmpl-big","object":"chat.completion","created":1732000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"%s"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`, strings.Repeat("a", size)))
	big := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	}
	up := newFake(t, okJSON("warm-up"))
	bin := filepath.Join(t.TempDir(), "switchyard-norace")
	if err := testproc.Build(bin, "..", false); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(testConfig("", upstreamYAML("one", up.BaseURL(), "k", 1, "")), "log_level: debug", "log_level: warn", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := testproc.Start(bin, cfgPath, []string{"GOMEMLIMIT=200MiB"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	readAll(t, post(t, p.URL, simpleBody, noStore...)) // warm: connections, pools
	base := procStatusKB(t, p.Pid(), "VmRSS")
	up.SetHandler(big)

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", strings.NewReader(simpleBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Cache-Control", "no-store")
			resp, err := httpClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err != nil || resp.StatusCode != 200 || n != int64(len(body)) {
				errs <- fmt.Errorf("status %d, %d bytes, %v", resp.StatusCode, n, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	peak := procStatusKB(t, p.Pid(), "VmHWM")
	limit := base + int64(1.5*float64(clients*size)/1024)
	t.Logf("baseline RSS %d MB, peak %d MB, bound %d MB", base>>10, peak>>10, limit>>10)
	if peak > limit {
		t.Errorf("peak RSS %d MB over %d MB (baseline %d MB + 1.5 × %d answers of %d MB)", peak>>10, limit>>10, base>>10, clients, size>>20)
	}
}

// procStatusKB reads a kB field of /proc/pid/status.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skip("no /proc:", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
