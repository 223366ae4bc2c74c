<?php
// Minimal ProductBridge webhook receiver: PHP, standard library only.
//
//   WEBHOOK_SECRET=whsec_... php -S 127.0.0.1:8080 receiver.php
//
// Verifies X-ProductBridge-Signature (sha256=<hex HMAC-SHA256 of the raw body>)
// in constant time; answers 204 when it verifies, 401 when it does not.

$secret = getenv('WEBHOOK_SECRET');
if ($secret === false || $secret === '') {
    http_response_code(500);
    file_put_contents('php://stderr', "WEBHOOK_SECRET is not set\n");
    exit;
}
if ($_SERVER['REQUEST_METHOD'] !== 'POST') {
    header('Allow: POST');
    http_response_code(405);
    exit;
}

// The raw bytes as sent: never verify a re-encoded json_decode result.
$rawBody = file_get_contents('php://input');
$header = $_SERVER['HTTP_X_PRODUCTBRIDGE_SIGNATURE'] ?? '';

$ok = false;
if (str_starts_with($header, 'sha256=')) {
    $expected = hash_hmac('sha256', $rawBody, $secret);
    // Known string first, user-supplied string second.
    $ok = hash_equals($expected, substr($header, strlen('sha256=')));
}

$event = $_SERVER['HTTP_X_PRODUCTBRIDGE_EVENT'] ?? '-';
$delivery = $_SERVER['HTTP_X_PRODUCTBRIDGE_DELIVERY_ID'] ?? '-';
file_put_contents('php://stdout', "event=$event delivery=$delivery verified=" . ($ok ? 'yes' : 'no') . "\n");

if ($ok) {
    // Handle json_decode($rawBody, true) here, idempotently per delivery id.
}
http_response_code($ok ? 204 : 401);
