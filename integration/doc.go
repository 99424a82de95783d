// Package integration holds black-box tests of the real switchyard binary
// against fake OpenAI-compatible upstreams and real memcached processes, all
// on 127.0.0.1. It has no non-test code besides this comment.
package integration
