// The OpenAI Node SDK's own batch workflow against the emulator, unchanged.
// Usage: node openai_node_flow.mjs <base_url> <work_dir>; prints one JSON summary line; exit 0 on success.
import OpenAI, { toFile } from "openai";
import fs from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";

const [baseURL, workDir] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "sk-test", maxRetries: 0 });
const TEXT = "héllo wörld ✓ 東京";
const TERMINAL = ["completed", "failed", "cancelled", "expired"];
const line = (i) =>
  JSON.stringify({
    custom_id: `node-${i}`,
    method: "POST",
    url: "/v1/chat/completions",
    body: { model: "Qwen/Qwen3.5-9B", messages: [{ role: "user", content: `${TEXT} node ${i}` }] },
  });
const jsonl = [0, 1, 2, 3].map(line).join("\n") + "\n";
const jobs = path.join(workDir, "jobs.jsonl");
fs.writeFileSync(jobs, jsonl);
const summary = {};

// Uploads: a fs.ReadStream, toFile(Buffer), a web File; raw response via withResponse().
const fromStream = await client.files.create({ file: fs.createReadStream(jobs), purpose: "batch" });
assert.equal(fromStream.filename, "jobs.jsonl");
assert.equal(fromStream.bytes, Buffer.byteLength(jsonl));
const fromBuffer = await client.files.create({ file: await toFile(Buffer.from(jsonl), "buf ✓.jsonl"), purpose: "batch" });
assert.equal(fromBuffer.filename, "buf ✓.jsonl");
const webFile = new File([jsonl], "web.jsonl", { type: "application/jsonl" });
const { data: fromWeb, response: rawUpload } = await client.files.create({ file: webFile, purpose: "batch" }).withResponse();
assert.equal(rawUpload.status, 201);
assert.equal(fromWeb.bytes, Buffer.byteLength(jsonl));

// Batch: create, poll, download with .text() (the reply has no charset: fetch decodes UTF-8).
let batch = await client.batches.create({
  input_file_id: fromStream.id,
  endpoint: "/v1/chat/completions",
  completion_window: "24h",
  metadata: { client: "node ✓" },
});
assert.equal(batch.status, "validating");
assert.equal(batch.request_counts.total, 4);
const deadline = Date.now() + 20000;
while (!TERMINAL.includes(batch.status)) {
  assert.ok(Date.now() < deadline, "batch did not finish");
  await new Promise((r) => setTimeout(r, 50));
  batch = await client.batches.retrieve(batch.id);
}
assert.equal(batch.status, "completed");
assert.equal(batch.metadata.client, "node ✓");
const resp = await client.files.content(batch.output_file_id);
assert.equal(resp.headers.get("content-type"), "application/x-ndjson");
assert.equal(resp.headers.get("x-last-line"), "4");
const text = await resp.text();
const rows = text.trim().split("\n").map((x) => JSON.parse(x));
assert.deepEqual(rows.map((r) => r.custom_id).sort(), ["node-0", "node-1", "node-2", "node-3"]);
assert.ok(rows.every((r) => r.response.status_code === 200 && r.error === null));
assert.ok(text.includes(`${TEXT} node 2`), "raw UTF-8 in the output");
const input = await (await client.files.content(batch.input_file_id)).text();
assert.ok(input.includes(`${TEXT} node 0`));
assert.equal(await (await client.files.content(batch.error_file_id)).text(), "");
summary.batch = batch.id;

// Auto-pagination follows has_more + after=<last id>.
for (let i = 0; i < 3; i++) {
  await client.batches.create({ input_file_id: fromBuffer.id, endpoint: "/v1/chat/completions", completion_window: "1h" });
}
const ids = [];
for await (const b of client.batches.list({ limit: 2 })) ids.push(b.id);
assert.equal(new Set(ids).size, ids.length);
assert.ok(ids.length >= 4 && ids.includes(batch.id));
const fileIds = [];
for await (const f of client.files.list({ limit: 2 })) fileIds.push(f.id);
assert.equal(new Set(fileIds).size, fileIds.length);
assert.ok(fileIds.includes(fromWeb.id));
summary.listed_batches = ids.length;

// Errors: plain-text bodies still give the right error classes.
await assert.rejects(client.batches.retrieve("not-a-uuid"), (e) => e instanceof OpenAI.BadRequestError && e.status === 400);
await assert.rejects(
  client.files.retrieve("00000000-0000-0000-0000-000000000000"),
  (e) => e instanceof OpenAI.NotFoundError && String(e.message).includes("not found"),
);
const bad = new OpenAI({ baseURL, apiKey: "sk-wrong", maxRetries: 0 });
await assert.rejects(bad.batches.list(), (e) => e instanceof OpenAI.AuthenticationError);

// Models, cancel, delete.
const models = await client.models.list();
assert.ok(models.data.some((m) => m.id === "Qwen/Qwen3.5-9B" && m.owned_by === "None"));
assert.equal((await client.batches.cancel(batch.id)).status, "cancelled");
const deleted = await client.files.delete(fromWeb.id);
assert.equal(deleted.deleted, true);
summary.ok = true;
console.log(JSON.stringify(summary));
