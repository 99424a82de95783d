package sdk

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

const npmHint = "run `npm ci --prefix integration/node` (make test and .ci/run do)"

// TestNodeSDK runs integration/node's `node --test` suite, which uses the
// official `openai` npm package, against the real binary and the fake
// upstream. A missing Node.js or node_modules is a failure, never a skip.
func TestNodeSDK(t *testing.T) {
	t.Parallel()
	dir, err := filepath.Abs("../node")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (%v): install Node.js and npm (e.g. `apt-get install nodejs npm`, as .ci/run does), then run `npm ci --prefix integration/node`", err)
	}
	checkNodeModules(t, dir)
	files, err := filepath.Glob(filepath.Join(dir, "*.test.mjs"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no *.test.mjs files in %s (%v)", dir, err)
	}

	p := setup(t)
	c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The TAP reporter is spelled out: its summary is the same on every Node
	// version, and parsed below.
	cmd := exec.CommandContext(c, node, append([]string{"--test", "--test-reporter=tap"}, files...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SWITCHYARD_URL="+p.URL+"/v1", "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test failed (%v):\n%s", err, out)
	}
	counts := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$`).FindAllSubmatch(out, -1) {
		counts[string(m[1])], _ = strconv.Atoi(string(m[2]))
	}
	if counts["pass"] < 5 || counts["fail"]+counts["cancelled"]+counts["skipped"]+counts["todo"] != 0 || counts["pass"] != counts["tests"] {
		t.Fatalf("node --test summary %v: want every test (at least 5) to pass, none skipped:\n%s", counts, out)
	}
	t.Logf("node --test: %d tests passed", counts["pass"])
}

// checkNodeModules fails the test unless `npm ci` installed the openai
// version package.json pins.
func checkNodeModules(t *testing.T, dir string) {
	t.Helper()
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err == nil {
		err = json.Unmarshal(b, &pkg)
	}
	if err != nil {
		t.Fatalf("reading integration/node/package.json: %v", err)
	}
	want := pkg.Dependencies["openai"]
	var installed struct{ Version string }
	b, err = os.ReadFile(filepath.Join(dir, "node_modules", "openai", "package.json"))
	if err != nil {
		t.Fatalf("the openai npm package is not installed in integration/node/node_modules: %s", npmHint)
	}
	if err := json.Unmarshal(b, &installed); err != nil || installed.Version != want {
		t.Fatalf("integration/node/node_modules has openai %q, package.json pins %q (%v): %s", installed.Version, want, err, npmHint)
	}
}
