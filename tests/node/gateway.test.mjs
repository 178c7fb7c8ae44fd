// The official `openai` Node SDK against a running oai-gateway.
// OAI_GATEWAY_URL (server root) and OAI_GATEWAY_KEY come from the environment; the pytest test
// tests/test_node_sdk.py starts the gateway in front of loopback fakes and sets them.
import assert from "node:assert/strict";
import { test } from "node:test";

import OpenAI from "openai";

const root = process.env.OAI_GATEWAY_URL;
const apiKey = process.env.OAI_GATEWAY_KEY;
const provider = process.env.OAI_GATEWAY_PROVIDER ?? "custom";
const model = process.env.OAI_GATEWAY_MODEL ?? "gpt-test";
const embedModel = process.env.OAI_GATEWAY_EMBED_MODEL ?? "org/model-a";
const prompt = "hello brave new world";

if (!root || !apiKey) {
  throw new Error("set OAI_GATEWAY_URL and OAI_GATEWAY_KEY to run these tests");
}

function client(options = {}) {
  // No retries: every error must surface on the first answer, and fast.
  return new OpenAI({ baseURL: `${root}/${provider}/v1`, apiKey, maxRetries: 0, timeout: 10_000, ...options });
}

test("models: list and retrieve", async () => {
  const page = await client().models.list();
  const ids = page.data.map((m) => m.id);
  assert.ok(ids.includes(model), `${model} not in ${ids}`);
  for (const m of page.data) {
    assert.equal(m.object, "model");
    assert.equal(typeof m.created, "number");
  }
  const one = await client().models.retrieve(model);
  assert.equal(one.id, model);
});

test("chat: one answer", async () => {
  const done = await client().chat.completions.create({
    model,
    messages: [{ role: "user", content: prompt }],
  });
  assert.equal(done.object, "chat.completion");
  assert.equal(done.choices[0].message.role, "assistant");
  assert.equal(done.choices[0].message.content, prompt);
  assert.equal(done.choices[0].finish_reason, "stop");
  assert.ok(done.usage.total_tokens > 0);
});

test("chat: stream with include_usage", async () => {
  const stream = await client().chat.completions.create({
    model,
    messages: [{ role: "user", content: prompt }],
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const withChoices = chunks.filter((c) => c.choices.length > 0);
  assert.equal(withChoices[0].choices[0].delta.role, "assistant");
  assert.equal(withChoices.map((c) => c.choices[0].delta.content ?? "").join(""), prompt);
  assert.equal(withChoices.at(-1).choices[0].finish_reason, "stop");
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.completion_tokens > 0);
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
});

test("chat: the stream helper assembles the final message", async () => {
  const runner = client().chat.completions.stream({
    model,
    messages: [{ role: "user", content: prompt }],
  });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.content, prompt);
});

test("embeddings: the default base64 decodes to the float answer", async () => {
  const input = ["first text", "second text"];
  const floats = await client().embeddings.create({ model: embedModel, input, encoding_format: "float" });
  const decoded = await client().embeddings.create({ model: embedModel, input });
  assert.deepEqual(
    decoded.data.map((d) => d.embedding),
    floats.data.map((d) => d.embedding),
  );
  assert.deepEqual(floats.data.map((d) => d.index), [0, 1]);
});

test("errors: unknown model is NotFoundError with model_not_found", async () => {
  await assert.rejects(
    client().chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }),
    (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}`);
      assert.equal(err.status, 404);
      assert.equal(err.code, "model_not_found");
      assert.equal(err.type, "invalid_request_error");
      assert.ok(err.requestID, "x-request-id missing");
      return true;
    },
  );
});

test("errors: unknown provider is NotFoundError with provider_not_found", async () => {
  const other = new OpenAI({ baseURL: `${root}/no-such-provider/v1`, apiKey, maxRetries: 0 });
  await assert.rejects(other.models.list(), (err) => {
    assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}`);
    assert.equal(err.code, "provider_not_found");
    return true;
  });
});

test("errors: a wrong gateway key is AuthenticationError", async () => {
  await assert.rejects(client({ apiKey: "wrong-key" }).models.list(), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}`);
    assert.equal(err.status, 401);
    assert.equal(err.code, "invalid_api_key");
    return true;
  });
});

// The Responses API on a native provider (whose upstream answers as llama.cpp's server does:
// no sequence numbers or indices, which the SDK's stream helper needs) and a translated one.
const translatedModel = process.env.OAI_GATEWAY_TRANSLATED_MODEL ?? "gpt-oss-120b";

function responsesClient(name) {
  return new OpenAI({ baseURL: `${root}/${name}/v1`, apiKey, maxRetries: 0, timeout: 10_000 });
}

async function responsesCreate(name, responsesModel) {
  const done = await responsesClient(name).responses.create({ model: responsesModel, input: prompt });
  assert.equal(done.object, "response");
  assert.equal(done.status, "completed");
  assert.equal(done.output_text, prompt);
  assert.ok(done.usage.output_tokens > 0);
}

async function responsesStream(name, responsesModel) {
  const stream = responsesClient(name).responses.stream({ model: responsesModel, input: prompt });
  const types = [];
  for await (const event of stream) types.push(event.type);
  const final = await stream.finalResponse();
  assert.equal(types[0], "response.created");
  assert.equal(types.at(-1), "response.completed");
  const message = final.output.find((item) => item.type === "message");
  assert.equal(message.content.map((part) => part.text).join(""), prompt);
}

test("responses (native): create", () => responsesCreate("custom", model));
test("responses (native): stream and finalResponse", () => responsesStream("custom", model));
test("responses (translated): create", () => responsesCreate("cerebras", translatedModel));
test("responses (translated): stream and finalResponse", () =>
  responsesStream("cerebras", translatedModel));
