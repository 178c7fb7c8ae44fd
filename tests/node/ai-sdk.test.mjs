// The AI SDK (`ai` + `@ai-sdk/openai`) against a running oai-gateway: `openai(model)` is its
// default model, the Responses API. OAI_GATEWAY_URL (server root) and OAI_GATEWAY_KEY come from
// the environment; tests/conformance/test_node_sdk.py starts the gateway in front of loopback
// fakes (the native provider's upstream answering as llama.cpp's server does) and sets them.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const root = process.env.OAI_GATEWAY_URL;
const apiKey = process.env.OAI_GATEWAY_KEY;
const prompt = "hello brave new world";
const models = {
  native: ["custom", process.env.OAI_GATEWAY_MODEL ?? "gpt-test"],
  translated: ["cerebras", process.env.OAI_GATEWAY_TRANSLATED_MODEL ?? "gpt-oss-120b"],
};

if (!root || !apiKey) {
  throw new Error("set OAI_GATEWAY_URL and OAI_GATEWAY_KEY to run these tests");
}

function model(mode) {
  const [provider, name] = models[mode];
  return createOpenAI({ baseURL: `${root}/${provider}/v1`, apiKey })(name);
}

for (const mode of Object.keys(models)) {
  test(`ai sdk (${mode}): generateText`, async () => {
    const result = await generateText({ model: model(mode), prompt, maxRetries: 0 });
    assert.equal(result.text, prompt);
    assert.equal(result.finishReason, "stop");
    assert.ok(result.usage.outputTokens > 0, JSON.stringify(result.usage));
  });

  test(`ai sdk (${mode}): streamText`, async () => {
    // streamText reports failures (AI_TypeValidationError among them) to onError, not by
    // throwing: collect them, so that a stream which broke cannot pass.
    const errors = [];
    const result = streamText({
      model: model(mode),
      prompt,
      maxRetries: 0,
      onError: ({ error }) => errors.push(error),
    });
    const pieces = [];
    for await (const piece of result.textStream) pieces.push(piece);
    assert.deepEqual(errors, []);
    assert.ok(pieces.length > 1, `one piece only: ${JSON.stringify(pieces)}`);
    assert.equal(pieces.join(""), prompt);
    assert.equal(await result.finishReason, "stop");
    assert.ok((await result.usage).outputTokens > 0);
  });
}
