// The Responses API (client.responses.create) through switchyard, with the
// official `openai` npm package. Started by integration/sdk's TestNodeSDK,
// which sets SWITCHYARD_URL; the fake upstream's /v1/responses is in
// integration/sdk/responses_test.go (Groq's shape, as OpenAI documents it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import OpenAI from "openai";

const baseURL = process.env.SWITCHYARD_URL;
if (!baseURL) {
  throw new Error(
    "SWITCHYARD_URL is not set: run these tests through `go test ./integration/sdk -run TestNodeSDK`",
  );
}

const MODEL = "llama-3.3-70b";
const UPSTREAM_MODEL = "llama-3.3-70b-versatile";
const UPSTREAM_NAME = "groq_fake";
const PLAIN_ANSWER = "Hi there! How can I help you today?";
const STREAM_WORDS = ["One", ", two", ", three", ", four", ", five."];
const STREAM_DELAY_MS = 100; // the fake pauses this long before every event
const CUT_WORD = "CUT-THE-STREAM"; // the fake breaks off a stream whose input holds it

const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 30_000 });

test("responses.create plain", async () => {
  const { data, response } = await client.responses
    .create({ model: MODEL, input: "Say hi (node responses plain)" })
    .withResponse();
  assert.equal(data.object, "response");
  assert.equal(data.status, "completed");
  assert.equal(data.output_text, PLAIN_ANSWER);
  assert.equal(data.model, UPSTREAM_MODEL);
  assert.deepEqual(
    [data.usage.input_tokens, data.usage.output_tokens, data.usage.total_tokens],
    [12, 9, 21],
  );
  assert.equal(response.headers.get("x-upstream"), UPSTREAM_NAME);
});

test("responses.retrieve and responses.delete reach the creating upstream", async () => {
  const created = await client.responses.create({ model: MODEL, input: "Say hi (node responses retrieve)" });
  const { data, response } = await client.responses.retrieve(created.id).withResponse();
  assert.equal(data.id, created.id);
  assert.equal(data.output_text, PLAIN_ANSWER);
  assert.equal(response.headers.get("x-upstream"), UPSTREAM_NAME);
  await client.responses.delete(created.id);
  await assert.rejects(client.responses.retrieve(created.id), (err) => {
    assert.ok(err instanceof OpenAI.NotFoundError, `want NotFoundError, got ${err}`);
    return true;
  });
});

test("responses.create stream: true arrives event by event", async () => {
  const stream = await client.responses.create({
    model: MODEL,
    input: "Count to five (node responses stream)",
    stream: true,
  });
  const types = [];
  let text = "";
  let final = null;
  const arrivals = []; // one per delta
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") {
      text += event.delta;
      arrivals.push(performance.now());
    }
    if (event.type === "response.completed") final = event.response;
  }
  assert.equal(types[0], "response.created");
  assert.equal(types.at(-1), "response.completed");
  assert.equal(text, STREAM_WORDS.join(""));
  assert.equal(final.output[0].content[0].text, STREAM_WORDS.join(""));
  assert.equal(final.usage.output_tokens, 9);
  assert.equal(arrivals.length, STREAM_WORDS.length, "one event per delta");
  const spread = arrivals.at(-1) - arrivals[0];
  const min = ((STREAM_WORDS.length - 1) * STREAM_DELAY_MS * 3) / 4;
  assert.ok(
    spread >= min,
    `first and last delta arrived ${spread.toFixed(0)}ms apart, want >= ${min}ms: the stream was buffered`,
  );
});

test("a responses stream cut upstream rejects with the proxy's error event", async () => {
  const stream = await client.responses.create({
    model: MODEL,
    input: `please ${CUT_WORD}`,
    stream: true,
  });
  let deltas = 0;
  await assert.rejects(
    async () => {
      for await (const event of stream) {
        if (event.type === "response.output_text.delta") deltas++;
      }
    },
    (err) => {
      assert.ok(err instanceof OpenAI.APIError, `want an APIError, got ${err}`);
      assert.equal(err.code, "stream_interrupted");
      return true;
    },
  );
  assert.equal(deltas, 1);
});
