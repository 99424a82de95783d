// client.embeddings.create through switchyard with the official `openai`
// npm package. Started by integration/sdk's TestNodeSDK, like
// sdk.test.mjs; the fake's /v1/embeddings is fakeEmbeddings in
// integration/sdk/gosdk_embeddings_test.go. All the tests of this
// directory share one proxy, so every input here is unique to this file.
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";

const baseURL = process.env.SWITCHYARD_URL;
if (!baseURL) {
  throw new Error(
    "SWITCHYARD_URL is not set: run these tests through `go test ./integration/sdk -run TestNodeSDK`",
  );
}

const MODEL = "text-embedding-3-small";
const UPSTREAM_NAME = "groq_fake";

const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 30_000 });

// fakeVector is the fake's vector for one input: element j is
// ((sum of the input's bytes + 7j) mod 200 - 100) / 128, exact in float32.
function fakeVector(input, dims) {
  const sum = [...Buffer.from(input, "utf8")].reduce((a, b) => a + b, 0);
  return Array.from({ length: dims }, (_, j) => (((sum + 7 * j) % 200) - 100) / 128);
}

function checkVectors(data, inputs, dims) {
  assert.equal(data.data.length, inputs.length);
  data.data.forEach((e, i) => {
    assert.equal(e.index, i);
    assert.deepEqual(Array.from(e.embedding), fakeVector(inputs[i], dims));
  });
}

// The SDK asks for base64 by default and decodes it into floats: the
// proxy relays (and caches) the base64 answer byte for byte.
test("embeddings.create (base64 by default), then a cache HIT", async () => {
  const inputs = ["node embeds this text", "node embeds that one"];
  const first = await client.embeddings.create({ model: MODEL, input: inputs }).withResponse();
  checkVectors(first.data, inputs, 8);
  assert.equal(first.data.model, MODEL);
  assert.equal(first.data.usage.prompt_tokens, 8);
  assert.equal(first.response.headers.get("x-cache"), "MISS");
  assert.equal(first.response.headers.get("x-upstream"), UPSTREAM_NAME);

  // The store is asynchronous: ask again (bounded) until the cache answers.
  let cache = "";
  for (let i = 0; i < 100 && cache !== "HIT"; i++) {
    const again = await client.embeddings.create({ model: MODEL, input: inputs }).withResponse();
    checkVectors(again.data, inputs, 8);
    cache = again.response.headers.get("x-cache");
    if (cache !== "HIT") await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(cache, "HIT");
});

test("embeddings.create with encoding_format float and dimensions", async () => {
  const input = "node asks for four float dimensions";
  const { data, response } = await client.embeddings
    .create({ model: MODEL, input, encoding_format: "float", dimensions: 4 })
    .withResponse();
  checkVectors(data, [input], 4);
  assert.equal(response.headers.get("x-cache"), "MISS");
});
