package config_test

import (
	"fmt"
	"strings"

	"switchyard/config"
)

func ExampleParse() {
	cfg, err := config.Parse(strings.NewReader(`
upstreams:
  - name: groq_1
    provider: groq
    api_key: gsk_example
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	u := cfg.Upstreams[0]
	fmt.Println(cfg.Summary())
	fmt.Println(u.BaseURL, u.Timeout, u.Quota.Unit, u.Quota.Period)
	// Output:
	// config ok: listen 127.0.0.1:8080, 1 upstreams (1 with keys), cache embedded ttl 720h0m0s
	// https://api.groq.com/openai/v1 1m0s requests day
}

// Every error names the YAML path of the field at fault.
func ExampleParse_errors() {
	_, err := config.Parse(strings.NewReader(`
upstreams:
  - name: groq_1
    provider: groq
  - name: local
    provider: openai
    base_url: localhost:8000
    timout: 30s
`))
	fmt.Println(err)
	_, err = config.Parse(strings.NewReader(`
upstreams:
  - name: local
    provider: openai
    base_url: localhost:8000
`))
	fmt.Println(err)
	// Output:
	// upstreams[1].timout: unknown key (line 8)
	// upstreams[0].base_url: must be an http(s) URL
}

// Left out, forward_headers and unsupported_params take the provider's
// defaults; an explicit [] means none.
func ExampleParse_providerDefaults() {
	cfg, err := config.Parse(strings.NewReader(`
upstreams:
  - name: groq_1
    provider: groq
  - name: hf_1
    provider: huggingface
    headers:
      X-HF-Bill-To: my-org
  - name: hf_2
    provider: huggingface
    forward_headers: []
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, u := range cfg.Upstreams {
		fmt.Println(u.Name, u.ForwardHeaders, u.UnsupportedParams, u.Headers)
	}
	// Output:
	// groq_1 [] [n logprobs top_logprobs logit_bias] map[]
	// hf_1 [X-HF-Bill-To] [] map[X-HF-Bill-To:my-org]
	// hf_2 [] [] map[]
}
