package integration

import "testing"

// startReplicas runs n proxies on one config, as sidecar replicas sharing
// its cache backend (memcached in the config). Each stops when the test
// ends; a test restarts a killed replica with startProxy(t, cfg).
func startReplicas(t *testing.T, n int, cfg string, env ...string) []*proxyProc {
	t.Helper()
	ps := make([]*proxyProc, n)
	for i := range ps {
		ps[i] = startProxy(t, cfg, env...)
	}
	return ps
}
