// Minimal ProductBridge webhook receiver: Node.js, standard library only.
//
//   WEBHOOK_SECRET=whsec_... PORT=8080 node receiver.js
//
// Verifies X-ProductBridge-Signature (sha256=<hex HMAC-SHA256 of the raw body>)
// in constant time; answers 204 when it verifies, 401 when it does not.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');

const secret = process.env.WEBHOOK_SECRET;
const port = Number(process.env.PORT || 8080);
if (!secret) {
  console.error('WEBHOOK_SECRET is not set');
  process.exit(2);
}

function verify(rawBody, header) {
  if (typeof header !== 'string' || !header.startsWith('sha256=')) return false;
  const expected = Buffer.from(
    crypto.createHmac('sha256', secret).update(rawBody).digest('hex'),
    'utf8',
  );
  const received = Buffer.from(header.slice('sha256='.length), 'utf8');
  // timingSafeEqual throws on different lengths; the length is not a secret.
  return received.length === expected.length && crypto.timingSafeEqual(received, expected);
}

http
  .createServer((req, res) => {
    if (req.method !== 'POST') {
      res.writeHead(405, { Allow: 'POST' }).end();
      return;
    }
    // Keep the body as raw bytes: never verify a re-serialised JSON.parse result.
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks);
      const ok = verify(rawBody, req.headers['x-productbridge-signature']);
      const event = req.headers['x-productbridge-event'] || '-';
      const delivery = req.headers['x-productbridge-delivery-id'] || '-';
      console.log(`event=${event} delivery=${delivery} verified=${ok ? 'yes' : 'no'}`);
      if (ok) {
        // Handle JSON.parse(rawBody) here, idempotently per delivery id.
      }
      res.writeHead(ok ? 204 : 401).end();
    });
  })
  .listen(port, '127.0.0.1', () => {
    console.log(`listening on http://127.0.0.1:${port}/`);
  });
