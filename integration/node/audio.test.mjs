// Audio transcription through a running switchyard with the official
// `openai` npm package (started by integration/sdk's TestNodeSDK, which sets
// SWITCHYARD_URL). The fake upstream (integration/sdk/audio_test.go) answers
// "<endpoint> by <upstream model>, <audio bytes> bytes"; the proxy maps the
// whisper-1 alias to Groq's whisper-large-v3-turbo.
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI, { toFile } from "openai";

const baseURL = process.env.SWITCHYARD_URL;
if (!baseURL) {
  throw new Error(
    "SWITCHYARD_URL is not set: run these tests through `go test ./integration/sdk -run TestNodeSDK`",
  );
}

const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 60_000 });

// wav returns a valid RIFF/WAVE file: 16-bit mono PCM at 16 kHz, a 440 Hz
// tone of n samples.
function wav(n) {
  const b = Buffer.alloc(44 + 2 * n);
  b.write("RIFF", 0);
  b.writeUInt32LE(36 + 2 * n, 4);
  b.write("WAVEfmt ", 8);
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20); // PCM
  b.writeUInt16LE(1, 22); // mono
  b.writeUInt32LE(16000, 24);
  b.writeUInt32LE(32000, 28);
  b.writeUInt16LE(2, 32);
  b.writeUInt16LE(16, 34);
  b.write("data", 36);
  b.writeUInt32LE(2 * n, 40);
  for (let i = 0; i < n; i++) {
    b.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / 16000)), 44 + 2 * i);
  }
  return b;
}

test("audio transcription of a generated WAV", async () => {
  const audio = wav(16000);
  const { data, response } = await client.audio.transcriptions
    .create({
      file: await toFile(audio, "speech.wav", { type: "audio/wav" }),
      model: "whisper-1",
      language: "en",
    })
    .withResponse();
  assert.equal(data.text, `transcriptions by whisper-large-v3-turbo, ${audio.length} bytes`);
  assert.equal(response.headers.get("x-upstream"), "groq_fake");
});

test("audio transcription with stream: true arrives as transcript events", async () => {
  const audio = wav(8000);
  const stream = await client.audio.transcriptions.create({
    file: await toFile(audio, "speech.wav", { type: "audio/wav" }),
    model: "whisper-1",
    stream: true,
  });
  const want = `transcriptions by whisper-large-v3-turbo, ${audio.length} bytes`;
  let deltas = "";
  let done = null;
  for await (const ev of stream) {
    if (ev.type === "transcript.text.delta") deltas += ev.delta;
    if (ev.type === "transcript.text.done") done = ev.text;
  }
  assert.equal(deltas.trim(), want);
  assert.equal(done, want);
});

test("audio upload over max_upload_bytes is an APIError 413", async () => {
  const audio = wav(13 * 1024 * 1024); // 26 MiB
  await assert.rejects(
    client.audio.transcriptions.create({
      file: await toFile(audio, "long.wav", { type: "audio/wav" }),
      model: "whisper-1",
    }),
    (err) => {
      assert.ok(err instanceof OpenAI.APIError, `not an APIError: ${err}`);
      assert.equal(err.status, 413);
      assert.equal(err.code, "request_too_large");
      return true;
    },
  );
});
