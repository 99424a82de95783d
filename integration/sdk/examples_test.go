package sdk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const examplesDir = "../../examples"

// doc is one decoded YAML document with the file it came from.
type doc struct {
	file string
	v    map[string]any
}

// loadExamples decodes every document of every examples/**/*.y*ml file.
func loadExamples(t *testing.T) []doc {
	t.Helper()
	var docs []doc
	err := filepath.WalkDir(examplesDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(examplesDir, path)
		dec := yaml.NewDecoder(bytes.NewReader(b))
		n := 0
		for {
			var v map[string]any
			err := dec.Decode(&v)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("examples/%s: document %d: %w", rel, n+1, err)
			}
			n++
			if len(v) == 0 {
				return fmt.Errorf("examples/%s: document %d is empty", rel, n)
			}
			docs = append(docs, doc{file: filepath.ToSlash(rel), v: v})
		}
		if n == 0 {
			return fmt.Errorf("examples/%s: no YAML document", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// get walks a decoded document: string keys index maps, ints index lists.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// checkConfig runs `switchyard -check` on a config file and returns its
// summary line.
func checkConfig(t *testing.T, path string) string {
	t.Helper()
	cmd := exec.Command(binary, "-check", "-config", path)
	cmd.Env = append(os.Environ(), "GROQ_API_KEY_1=gsk_example", "HF_API_KEY_1=hf_example")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("switchyard -check -config %s: %v\n%s", path, err, out)
	}
	return strings.TrimSpace(string(out))
}

// memcachedServers returns a switchyard config's cache.memcached list.
func memcachedServers(t *testing.T, cfg []byte) []string {
	t.Helper()
	var c struct {
		Cache struct{ Memcached []string } `yaml:"cache"`
	}
	if err := yaml.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	return c.Cache.Memcached
}

func TestExamplesParse(t *testing.T) {
	docs := loadExamples(t)
	files := map[string]bool{}
	for _, d := range docs {
		files[d.file] = true
	}
	for _, want := range []string{"docker-compose.yml", "config.compose.yaml", "kubernetes/deployment.yaml", "kubernetes/configmap.yaml", "kubernetes/secret.example.yaml", "kubernetes/memcached.yaml"} {
		if !files[want] {
			t.Errorf("examples/%s is missing", want)
		}
	}
}

func TestExampleCompose(t *testing.T) {
	summary := checkConfig(t, filepath.Join(examplesDir, "config.compose.yaml"))
	if !strings.Contains(summary, "memcached(1 servers)") || !strings.Contains(summary, "listen 0.0.0.0:8080") {
		t.Errorf("-check summary %q: want listen 0.0.0.0:8080 and one memcached", summary)
	}
	cfg, err := os.ReadFile(filepath.Join(examplesDir, "config.compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose map[string]any
	for _, d := range loadExamples(t) {
		if d.file == "docker-compose.yml" {
			compose = d.v
		}
	}
	for _, svc := range []string{"app", "switchyard", "memcached"} {
		if get(compose, "services", svc) == nil {
			t.Errorf("docker-compose.yml: no %q service", svc)
		}
	}
	if get(compose, "services", "switchyard", "build") == nil {
		t.Error("docker-compose.yml: switchyard is not built from the repository")
	}
	vols, _ := get(compose, "services", "switchyard", "volumes").([]any)
	if !slices.Contains(vols, any("./config.compose.yaml:/etc/switchyard/config.yaml:ro")) {
		t.Errorf("docker-compose.yml: switchyard volumes %v do not mount config.compose.yaml at /etc/switchyard/config.yaml", vols)
	}
	if mc := memcachedServers(t, cfg); !slices.Equal(mc, []string{"memcached:11211"}) {
		t.Errorf("config.compose.yaml: cache.memcached = %v, want the compose service memcached:11211", mc)
	}
}

func TestExampleKubernetes(t *testing.T) {
	byKind := map[string]map[string]any{} // "Kind/name" → document
	for _, d := range loadExamples(t) {
		if !strings.HasPrefix(d.file, "kubernetes/") {
			continue
		}
		kind, _ := get(d.v, "kind").(string)
		name, _ := get(d.v, "metadata", "name").(string)
		if get(d.v, "apiVersion") == nil || kind == "" || name == "" {
			t.Errorf("examples/%s: a document without apiVersion, kind or metadata.name", d.file)
			continue
		}
		byKind[kind+"/"+name] = d.v
	}
	for _, want := range []string{"Deployment/app", "ConfigMap/switchyard-config", "Secret/switchyard-keys", "Deployment/memcached", "Service/memcached"} {
		if byKind[want] == nil {
			t.Fatalf("examples/kubernetes: no %s (have %v)", want, keys(byKind))
		}
	}

	// The ConfigMap's config is valid and points at the memcached Service.
	cfg, _ := get(byKind["ConfigMap/switchyard-config"], "data", "config.yaml").(string)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if summary := checkConfig(t, path); !strings.Contains(summary, "listen 0.0.0.0:8080") {
		t.Errorf("ConfigMap config: -check summary %q, want listen 0.0.0.0:8080 (probes come from outside the pod)", summary)
	}
	svc := byKind["Service/memcached"]
	addr := fmt.Sprintf("%v:%v", get(svc, "metadata", "name"), get(svc, "spec", "ports", 0, "port"))
	if mc := memcachedServers(t, []byte(cfg)); !slices.Equal(mc, []string{addr}) {
		t.Errorf("ConfigMap config: cache.memcached = %v, want the Service %s", mc, addr)
	}

	// The sidecar: probes on /healthz:8080, keys from the Secret, config
	// from the ConfigMap, limits, non-root and a read-only root filesystem.
	pod := get(byKind["Deployment/app"], "spec", "template", "spec")
	containers, _ := get(pod, "containers").([]any)
	var sidecar any
	for _, c := range containers {
		if get(c, "name") == "switchyard" {
			sidecar = c
		}
	}
	if len(containers) < 2 || sidecar == nil {
		t.Fatalf("Deployment/app: want an app container and a switchyard sidecar, have %d containers", len(containers))
	}
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		if get(sidecar, probe, "httpGet", "path") != "/healthz" || get(sidecar, probe, "httpGet", "port") != 8080 {
			t.Errorf("switchyard %s = %v, want GET /healthz on 8080", probe, get(sidecar, probe))
		}
	}
	if get(sidecar, "envFrom", 0, "secretRef", "name") != "switchyard-keys" {
		t.Errorf("switchyard envFrom = %v, want the switchyard-keys Secret", get(sidecar, "envFrom"))
	}
	if get(sidecar, "volumeMounts", 0, "mountPath") != "/etc/switchyard" || get(pod, "volumes", 0, "configMap", "name") != "switchyard-config" {
		t.Error("switchyard: the switchyard-config ConfigMap is not mounted at /etc/switchyard")
	}
	if get(sidecar, "resources", "limits", "memory") == nil || get(sidecar, "resources", "requests", "cpu") == nil {
		t.Errorf("switchyard resources = %v", get(sidecar, "resources"))
	}
	if get(sidecar, "securityContext", "readOnlyRootFilesystem") != true || get(pod, "securityContext", "runAsNonRoot") != true {
		t.Error("switchyard: want runAsNonRoot and readOnlyRootFilesystem")
	}
	if grace, _ := get(pod, "terminationGracePeriodSeconds").(int); grace <= 30 {
		t.Errorf("terminationGracePeriodSeconds = %d, want more than shutdown_grace (30s)", grace)
	}
}

func keys(m map[string]map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
