// Drives a running switchyard with the official `openai` npm package.
//
// Started by integration/sdk's TestNodeSDK (`go test ./integration/sdk -run
// TestNodeSDK`), which builds the binary, starts it in front of a Groq-like
// fake upstream and sets SWITCHYARD_URL=<proxy>/v1. The constants below match
// that fake (integration/sdk/harness_test.go).
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
const OTHER_MODEL = "llama-3.1-8b";
const EMBEDDING_MODEL = "text-embedding-3-small"; // embeddings.test.mjs
const AUDIO_MODEL = "whisper-1"; // audio.test.mjs
const UPSTREAM_MODEL = "llama-3.3-70b-versatile";
const UPSTREAM_NAME = "groq_fake";
const PLAIN_ANSWER = "Hi there! How can I help you today?";
const STREAM_WORDS = ["One", ", two", ", three", ", four", ", five."];
const STREAM_DELAY_MS = 100; // the fake pauses this long before every event
const BAD_REQUEST_MESSAGE = "'n' : number must be at most 1";

// The one-line change an app makes: the proxy holds the real keys. No
// retries, so every call is exactly one request.
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 30_000 });

test("plain chat completion", async () => {
  const { data, response } = await client.chat.completions
    .create({ model: MODEL, messages: [{ role: "user", content: "Say hi (node plain)" }] })
    .withResponse();
  assert.equal(data.choices.length, 1);
  assert.equal(data.choices[0].message.content, PLAIN_ANSWER);
  assert.equal(data.choices[0].finish_reason, "stop");
  assert.equal(data.model, UPSTREAM_MODEL);
  assert.deepEqual(
    [data.usage.prompt_tokens, data.usage.completion_tokens, data.usage.total_tokens],
    [12, 9, 21],
  );
  assert.equal(response.headers.get("x-upstream"), UPSTREAM_NAME);
});

test("streaming chat completion arrives event by event", async () => {
  const stream = await client.chat.completions.create({
    model: MODEL,
    stream: true,
    messages: [{ role: "user", content: "Count to five (node stream)" }],
  });
  let text = "";
  let finish = null;
  const arrivals = []; // one per chunk with content
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      if (choice.delta?.content) {
        text += choice.delta.content;
        arrivals.push(performance.now());
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.equal(text, STREAM_WORDS.join(""));
  assert.equal(finish, "stop");
  assert.equal(arrivals.length, STREAM_WORDS.length, "one chunk per upstream event");
  const spread = arrivals.at(-1) - arrivals[0];
  const min = ((STREAM_WORDS.length - 1) * STREAM_DELAY_MS * 3) / 4;
  assert.ok(
    spread >= min,
    `first and last delta arrived ${spread.toFixed(0)}ms apart, want >= ${min}ms: the stream was buffered`,
  );
});

test("upstream 400 surfaces as BadRequestError", async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: MODEL,
      n: 2,
      messages: [{ role: "user", content: "Say hi twice (node)" }],
    }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 400);
      assert.equal(err.error?.message, BAD_REQUEST_MESSAGE);
      assert.equal(err.type, "invalid_request_error");
      assert.equal(err.message, `400 ${BAD_REQUEST_MESSAGE}`);
      return true;
    },
  );
});

test("unknown model surfaces as NotFoundError model_not_found", async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: "no-such-model",
      messages: [{ role: "user", content: "Say hi (node unknown model)" }],
    }),
    (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 404);
      assert.equal(err.code, "model_not_found");
      assert.match(err.error?.message ?? "", /no-such-model/);
      return true;
    },
  );
});

test("models.list lists the configured aliases", async () => {
  const page = await client.models.list();
  assert.deepEqual(
    page.data.map((m) => m.id),
    [OTHER_MODEL, MODEL, EMBEDDING_MODEL, AUDIO_MODEL],
  );
  for (const m of page.data) {
    assert.equal(m.object, "model");
    assert.ok(m.owned_by, `owned_by of ${m.id}`);
  }
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id); // auto-pagination stops after one page
  assert.deepEqual(ids, [OTHER_MODEL, MODEL, EMBEDDING_MODEL, AUDIO_MODEL]);
});

test("models.retrieve returns the listed entry, or a 404 model_not_found", async () => {
  const m = await client.models.retrieve(MODEL);
  assert.equal(m.id, MODEL);
  assert.equal(m.object, "model");
  await assert.rejects(client.models.retrieve("no-such-model"), (err) => {
    assert.equal(err.status, 404);
    assert.equal(err.code, "model_not_found");
    return true;
  });
});
