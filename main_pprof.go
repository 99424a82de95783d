//go:build pprof

// This file exists only in builds with -tags pprof (the performance
// harness's -profile option builds switchyard that way); production builds
// carry no profiling endpoint.

package main

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"time"
)

// init serves net/http/pprof on SWITCHYARD_PPROF (host:port) when the
// variable is set, so that CPU and heap profiles of a running switchyard can
// be taken:
//
//	go build -tags pprof -o /tmp/switchyard . && SWITCHYARD_PPROF=127.0.0.1:6060 /tmp/switchyard -config config.yaml
//	go tool pprof -top 'http://127.0.0.1:6060/debug/pprof/profile?seconds=10'
//
// The handlers sit on a mux and listener of their own, apart from the
// proxy's listener and /metrics, so profiling traffic is neither proxied nor
// counted as requests. (Importing net/http/pprof also registers the handlers
// on http.DefaultServeMux; switchyard never serves that mux.) A listener
// that cannot start is reported on stderr and switchyard runs on without it.
func init() {
	addr := os.Getenv("SWITCHYARD_PPROF")
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No write timeout: a CPU profile or trace answers after its seconds.
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil {
			fmt.Fprintf(os.Stderr, "switchyard: pprof listener on %s (SWITCHYARD_PPROF): %v\n", addr, err)
		}
	}()
}
