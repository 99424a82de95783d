// Package sdk drives the real switchyard binary with the official OpenAI
// client libraries: the Go SDK (github.com/openai/openai-go/v3) directly, and
// the Node.js `openai` package through `node --test integration/node`. It also
// checks that the deployment examples under examples/ parse and that their
// configuration passes `switchyard -check`.
//
// The SDKs are test-only dependencies: this package has no non-test code
// besides this comment, so the switchyard binary never links them.
package sdk
