package sdk

import (
	"bytes"
	"encoding/base64"
	binenc "encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// embeddingModel is served by the fake's /v1/embeddings (an alias of
// itself in proxyConfig).
const embeddingModel = "text-embedding-3-small"

func init() { fakeRoutes["/v1/embeddings"] = fakeEmbeddings }

// fakeEmbeddings answers /v1/embeddings as OpenAI documents it
// (https://platform.openai.com/docs/api-reference/embeddings/create and
// https://platform.openai.com/docs/api-reference/embeddings/object): a
// "list" of "embedding" objects, one per input, with the model and
// usage {prompt_tokens, total_tokens}. encoding_format "base64" (the
// openai npm package's default, decoded by it:
// https://github.com/openai/openai-node/pull/1312) sends each vector as
// the base64 of its little-endian float32 values. A vector is
// fakeVector(input, dimensions), so the Go and Node tests can check the
// numbers.
func fakeEmbeddings(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+upstreamKey {
		writeErr(w, 401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
		return
	}
	var req struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		Dimensions     int             `json:"dimensions"`
		EncodingFormat string          `json:"encoding_format"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model == "" || len(req.Input) == 0 {
		writeErr(w, 400, "'input' and 'model' are required", "invalid_request_error", "")
		return
	}
	var inputs []string
	if json.Unmarshal(req.Input, &inputs) != nil {
		var one string
		if err := json.Unmarshal(req.Input, &one); err != nil {
			writeErr(w, 400, "'$.input' is invalid: this fake takes strings", "invalid_request_error", "")
			return
		}
		inputs = []string{one}
	}
	dims := req.Dimensions
	if dims <= 0 {
		dims = 8
	}
	var b bytes.Buffer
	b.WriteString(`{"object":"list","data":[`)
	tokens := 0
	for i, in := range inputs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"object":"embedding","index":%d,"embedding":`, i)
		vec := fakeVector(in, dims)
		if req.EncodingFormat == "base64" {
			raw := make([]byte, 4*len(vec))
			for j, f := range vec {
				binenc.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(f))
			}
			b.WriteString(strconv.Quote(base64.StdEncoding.EncodeToString(raw)))
		} else {
			b.WriteByte('[')
			for j, f := range vec {
				if j > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strconv.FormatFloat(float64(f), 'g', -1, 32))
			}
			b.WriteByte(']')
		}
		b.WriteByte('}')
		tokens += len(strings.Fields(in))
	}
	fmt.Fprintf(&b, `],"model":%q,"usage":{"prompt_tokens":%d,"total_tokens":%d}}`, req.Model, tokens, tokens)
	groqHeaders(w)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Request-Id", "req_emb_01")
	_, _ = w.Write(b.Bytes())
}

// fakeVector is the fake's vector for one input: element j is
// ((sum of the input's bytes + 7j) mod 200 - 100) / 128, exact in float32
// (integration/node/embeddings.test.mjs computes the same).
func fakeVector(in string, dims int) []float32 {
	sum := 0
	for i := 0; i < len(in); i++ {
		sum += int(in[i])
	}
	vec := make([]float32, dims)
	for j := range vec {
		vec[j] = float32((sum+7*j)%200-100) / 128
	}
	return vec
}

// TestGoSDKEmbeddings: client.Embeddings.New through the proxy gets the
// upstream's vectors; the same call again is answered from the cache
// (X-Cache: HIT in the raw response) with the same vectors.
func TestGoSDKEmbeddings(t *testing.T) {
	t.Parallel()
	p := setup(t)
	client := newClient(p)
	inputs := []string{"go sdk embeds this", "and this"}
	params := openai.EmbeddingNewParams{
		Model:      embeddingModel,
		Input:      openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs},
		Dimensions: openai.Int(4),
	}
	var raw *http.Response
	resp, err := client.Embeddings.New(ctx(t), params, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatalf("Embeddings.New: %v", err)
	}
	if got := raw.Header.Get("X-Cache"); got != "MISS" {
		t.Errorf("first call X-Cache = %q, want MISS", got)
	}
	if got := raw.Header.Get("X-Upstream"); got != upstreamName {
		t.Errorf("X-Upstream = %q, want %q", got, upstreamName)
	}
	checkEmbeddings(t, resp, inputs, 4)
	if resp.Model != embeddingModel || resp.Usage.PromptTokens != 6 || resp.Usage.TotalTokens != 6 {
		t.Errorf("model %q usage %+v", resp.Model, resp.Usage)
	}

	// The store is asynchronous: ask again until the answer comes from the
	// cache (bounded), each time the same vectors.
	hit := false
	for i := 0; i < 100 && !hit; i++ {
		resp, err = client.Embeddings.New(ctx(t), params, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatalf("Embeddings.New #%d: %v", i+2, err)
		}
		checkEmbeddings(t, resp, inputs, 4)
		hit = raw.Header.Get("X-Cache") == "HIT"
		if !hit {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !hit {
		t.Fatalf("never X-Cache: HIT; last %q", raw.Header.Get("X-Cache"))
	}
}

func checkEmbeddings(t *testing.T, resp *openai.CreateEmbeddingResponse, inputs []string, dims int) {
	t.Helper()
	if len(resp.Data) != len(inputs) {
		t.Fatalf("data has %d embeddings, want %d: %s", len(resp.Data), len(inputs), resp.RawJSON())
	}
	for i, e := range resp.Data {
		want := fakeVector(inputs[i], dims)
		if e.Index != int64(i) || len(e.Embedding) != dims {
			t.Fatalf("embedding %d: index %d, %d dimensions: %s", i, e.Index, len(e.Embedding), e.RawJSON())
		}
		for j, v := range e.Embedding {
			if v != float64(want[j]) {
				t.Fatalf("embedding %d[%d] = %v, want %v", i, j, v, want[j])
			}
		}
	}
}
