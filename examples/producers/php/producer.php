<?php
// Emits ProductBridge events from a PHP application, in the same transaction
// as the business change (PDO with the pdo_pgsql extension: Debian php-pgsql).
//
//   DATABASE_URL=postgres://... ORGANIZATION_ID=<uuid> php producer.php
//
// Creates a post and emits post.created, then commits: the event is delivered.
// Then renames it, emits post.edited and rolls back: the event goes with the
// transaction, so it never exists and is never sent. Prints both event ids as JSON.

declare(strict_types=1);

const TITLE = 'Dark mode for the "café" ✓ 🌙';

/** PDO wants a DSN: postgres://user:password@host:port/db?sslmode=... turned into one. */
function connect(string $url): PDO
{
    $parts = parse_url($url);
    $dsn = sprintf('pgsql:host=%s;port=%d;dbname=%s', $parts['host'] ?? 'localhost',
        $parts['port'] ?? 5432, rawurldecode(ltrim($parts['path'] ?? '', '/')));
    parse_str($parts['query'] ?? '', $options);
    foreach ($options as $name => $value) {
        $dsn .= ";$name=$value";
    }
    $user = isset($parts['user']) ? rawurldecode($parts['user']) : null;
    $password = isset($parts['pass']) ? rawurldecode($parts['pass']) : null;
    return new PDO($dsn, $user, $password, [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
}

/** Runs on the transaction's connection, so the event commits or rolls back with it. */
function emit(PDO $db, string $organizationId, string $event, array $data): string
{
    $statement = $db->prepare('SELECT outbox.emit(?, ?, ?)');
    $statement->execute([$organizationId, $event, json_encode($data, JSON_THROW_ON_ERROR)]);
    return $statement->fetchColumn();
}

$url = getenv('DATABASE_URL');
$organizationId = getenv('ORGANIZATION_ID');
if (!$url || !$organizationId) {
    fwrite(STDERR, "DATABASE_URL and ORGANIZATION_ID must be set\n");
    exit(2);
}
$postId = getenv('POST_ID') ?: 'post_' . bin2hex(random_bytes(8));

$db = connect($url);
$db->exec('CREATE TABLE IF NOT EXISTS posts (id text PRIMARY KEY, title text NOT NULL, status text NOT NULL)');

$db->beginTransaction();
try {
    $db->prepare("INSERT INTO posts (id, title, status) VALUES (?, ?, 'open')")->execute([$postId, TITLE]);
    $committed = emit($db, $organizationId, 'post.created', ['id' => $postId, 'title' => TITLE]);
    $db->commit();
} catch (Throwable $error) {
    $db->rollBack();
    throw $error;
}

// A request that fails after emit: the rollback takes the event with it.
$db->beginTransaction();
$db->prepare('UPDATE posts SET title = ? WHERE id = ?')->execute(['Renamed', $postId]);
$rolledBack = emit($db, $organizationId, 'post.edited',
    ['id' => $postId, 'title' => 'Renamed', 'changed_fields' => ['title']]);
$db->rollBack();

echo json_encode(['committed' => $committed, 'rolled_back' => $rolledBack]), "\n";
