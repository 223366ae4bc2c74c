// Verifies one webhookd delivery of a `standard` webhook with the official
// `standardwebhooks` library (npm ci).
//
// Reads one JSON object on stdin:
//   {"secret": "whsec_...", "headers": {"webhook-id": "...", ...},
//    "body_base64": "<the raw body, base64>", "now": <optional Unix seconds>}
// and prints `ok` (exit 0) or `rejected: <the library's error>` (exit 1).
// `now` verifies as if the clock said so, to check the library's tolerance.

import { Webhook } from "standardwebhooks";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));
if (request.now !== undefined && request.now !== null) {
  // The library reads the clock through Date.now().
  Date.now = () => request.now * 1000;
}
// The raw bytes as a Buffer: the library signs them as they arrived.
const body = Buffer.from(request.body_base64, "base64");
try {
  new Webhook(request.secret).verify(body, request.headers);
  console.log("ok");
} catch (error) {
  console.log(`rejected: ${error.message}`);
  process.exitCode = 1;
}
