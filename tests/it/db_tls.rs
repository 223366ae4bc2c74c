//! TLS to PostgreSQL with libpq's `sslmode` and `sslrootcert`, against a
//! throwaway cluster with its own CA that accepts only TLS connections
//! (`hostssl`): every command, the daemon (pool and LISTEN) and the demo;
//! each way a TLS setting can be wrong is one line naming what to change,
//! with the right exit status and nothing written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use devkit::cluster::{ClusterOptions, ThrowawayCluster};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use uuid::Uuid;

use crate::harness::process::{create_args, Replica, Webhookd};
use crate::harness::{http_request, secret_key, wait_until, Receiver};

/// In every URL: trust authentication ignores it, and no message may show it.
const PASSWORD: &str = "tls-test-pw-8c1f";
/// The test's own sessions, told apart from the daemon's (`webhookd`).
const TEST_APPLICATION: &str = "db-tls-test";

/// A CA, in PEM.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// A server certificate naming only `localhost` (no IP address), and its key.
    fn server_certificate(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A hostssl-only cluster with a certificate from its own CA, and the files
/// the client side points `sslrootcert` at.
struct TlsServer {
    cluster: ThrowawayCluster,
    dir: PathBuf,
}

impl TlsServer {
    async fn start() -> TlsServer {
        let ca = Ca::new("webhookd db-tls test CA");
        let (cert, key) = ca.server_certificate();
        let cluster = ClusterOptions::new()
            .conf_line("ssl = on")
            .conf_line("ssl_cert_file = 'server.crt'")
            .conf_line("ssl_key_file = 'server.key'")
            .hba_lines([
                "local all all trust",
                "hostssl all all 127.0.0.1/32 trust",
                "hostssl all all ::1/128 trust",
            ])
            .file("server.crt", cert)
            .file("server.key", key)
            .start()
            .await
            .expect("a throwaway cluster that accepts only TLS");
        let dir = std::env::temp_dir().join(format!("webhookd-db-tls-{}", Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
        let other = Ca::new("some other CA");
        std::fs::write(dir.join("other-ca.pem"), other.cert.pem()).unwrap();
        std::fs::write(dir.join("not-a-cert.pem"), "just some text\n").unwrap();
        TlsServer { cluster, dir }
    }

    /// A file next to the CA (`ca.pem`, `other-ca.pem`, `not-a-cert.pem`).
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `postgres://postgres:PASSWORD@HOST:PORT/DATABASE?PARAMS`.
    fn url(&self, host: &str, database: &str, params: &str) -> String {
        let url = format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/{database}",
            self.cluster.port()
        );
        if params.is_empty() {
            url
        } else {
            format!("{url}?{params}")
        }
    }

    /// Checked in full: verify-full against our CA, on the name the
    /// certificate carries.
    fn verified_url(&self, database: &str) -> String {
        self.url(
            "localhost",
            database,
            &format!(
                "sslmode=verify-full&sslrootcert={}",
                path(&self.file("ca.pem"))
            ),
        )
    }

    /// The test's own connection (not named `webhookd`).
    async fn client(&self, database: &str) -> tokio_postgres::Client {
        let url = format!(
            "{}&application_name={TEST_APPLICATION}",
            self.verified_url(database)
        );
        webhookd::db::connect_single(&url)
            .await
            .unwrap_or_else(|err| panic!("connect to the TLS cluster: {err}"))
    }

    async fn count(&self, database: &str, sql: &str) -> i64 {
        self.client(database)
            .await
            .query_typed_one(sql, &[])
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
            .get(0)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temporary path").to_string()
}

fn emit_args(org: &str) -> Vec<&str> {
    vec![
        "emit",
        "--org",
        org,
        "--event",
        "post.deleted",
        "--data",
        r#"{"id": "p-tls"}"#,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_and_the_daemon_work_over_tls_to_a_tls_only_server() {
    let server = TlsServer::start().await;
    let key = secret_key();
    let org = Uuid::new_v4().to_string();
    let receiver = Receiver::with_status(200).await;

    // require: encrypted, the certificate not checked (the IP is not in it).
    Webhookd::new(
        &server.url("127.0.0.1", "postgres", "sslmode=require"),
        &["migrate"],
    )
    .output()
    .await
    .succeeded();

    let verified = server.verified_url("postgres");
    let target = receiver.url("/tls");
    let created = Webhookd::new(&verified, &create_args(&org, &target))
        .key(&key)
        .output()
        .await
        .json();
    let emitted = Webhookd::new(&verified, &emit_args(&org))
        .output()
        .await
        .succeeded()
        .trim()
        .to_string();
    assert!(Uuid::parse_str(&emitted).is_ok(), "an event id: {emitted}");
    let listed = Webhookd::new(&verified, &["webhooks", "list", "--org", &org])
        .output()
        .await
        .json();
    assert_eq!(listed[0]["id"], created["id"]);

    // verify-ca checks the chain but not the name: the IP URL passes.
    let verify_ca = server.url(
        "127.0.0.1",
        "postgres",
        &format!(
            "sslmode=verify-ca&sslrootcert={}",
            path(&server.file("ca.pem"))
        ),
    );
    Webhookd::new(&verify_ca, &["webhooks", "list", "--org", &org])
        .output()
        .await
        .succeeded();
    // No sslmode is libpq's prefer: TLS is negotiated (hostssl allows nothing else).
    let prefer = server.url("127.0.0.1", "postgres", "");
    Webhookd::new(&prefer, &["migrate", "--check"])
        .output()
        .await
        .succeeded();
    let own = webhookd::db::connect_single(&prefer).await.unwrap();
    let encrypted: bool = own
        .query_typed_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted, "prefer negotiated TLS");
    drop(own);

    let daemon = Replica::start(&verified, &key, &[]).await;
    daemon.wait_ready().await;
    let ready = http_request(daemon.admin, "GET", "/readyz", "", "").await;
    assert!(ready.contains(r#""listen":"active""#), "{ready}");
    // One event from before the start, one the daemon is woken for.
    Webhookd::new(&verified, &emit_args(&org))
        .output()
        .await
        .succeeded();
    let delivered = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert!(delivered.iter().all(|request| request.path == "/tls"));

    // Pool and LISTEN connection: every session of the daemon is encrypted.
    let (encrypted, plaintext): (i64, i64) = {
        let row = server
            .client("postgres")
            .await
            .query_typed_one(
                "SELECT count(*) FILTER (WHERE ssl), count(*) FILTER (WHERE NOT ssl) \
                 FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE application_name = 'webhookd'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(
        encrypted >= 2,
        "the pool and the LISTEN connection use TLS: {encrypted} TLS sessions"
    );
    assert_eq!(plaintext, 0);
    let log = daemon.log_text();
    assert!(!log.contains(PASSWORD), "the password is logged:\n{log}");
}

/// One way a TLS setting can be wrong: the URL, the exit status, and what
/// the one line must say.
struct Misconfigured {
    what: &'static str,
    url: String,
    code: i32,
    says: Vec<&'static str>,
}

fn misconfigurations(server: &TlsServer, database: &str) -> Vec<Misconfigured> {
    let ca = path(&server.file("ca.pem"));
    let with = |host: &str, params: String| server.url(host, database, &params);
    vec![
        Misconfigured {
            what: "a CA that did not sign the server's certificate",
            url: with(
                "localhost",
                format!(
                    "sslmode=verify-full&sslrootcert={}",
                    path(&server.file("other-ca.pem"))
                ),
            ),
            code: 1,
            says: vec!["certificate verify failed", "sslrootcert"],
        },
        Misconfigured {
            what: "require with a CA file checks the chain, as libpq does",
            url: with(
                "127.0.0.1",
                format!(
                    "sslmode=require&sslrootcert={}",
                    path(&server.file("other-ca.pem"))
                ),
            ),
            code: 1,
            says: vec!["certificate verify failed", "sslrootcert"],
        },
        Misconfigured {
            what: "verify-full to a host the certificate does not name",
            url: with("127.0.0.1", format!("sslmode=verify-full&sslrootcert={ca}")),
            code: 1,
            says: vec!["127.0.0.1", "verify-full"],
        },
        Misconfigured {
            what: "plaintext to a server that accepts only TLS",
            url: with("127.0.0.1", "sslmode=disable".to_string()),
            code: 1,
            says: vec!["sslmode=disable", "sslmode=require"],
        },
        Misconfigured {
            what: "an unknown sslmode",
            url: with("localhost", "sslmode=verify".to_string()),
            code: 2,
            says: vec!["unknown sslmode \"verify\"", "verify-full"],
        },
        Misconfigured {
            what: "a CA file that does not exist",
            url: with(
                "localhost",
                format!(
                    "sslmode=verify-full&sslrootcert={}",
                    path(&server.file("missing.pem"))
                ),
            ),
            code: 2,
            says: vec!["sslrootcert", "missing.pem"],
        },
        Misconfigured {
            what: "a CA file that holds no certificate",
            url: with(
                "localhost",
                format!(
                    "sslmode=verify-full&sslrootcert={}",
                    path(&server.file("not-a-cert.pem"))
                ),
            ),
            code: 2,
            says: vec!["sslrootcert", "not-a-cert.pem", "no PEM certificate"],
        },
        Misconfigured {
            what: "no host answers",
            url: format!(
                "postgres://postgres:{PASSWORD}@127.0.0.1:1,127.0.0.1:2/{database}?sslmode=verify-full&sslrootcert={ca}"
            ),
            code: 1,
            says: vec!["127.0.0.1:1", "127.0.0.1:2"],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_tls_setting_is_one_line_naming_it_and_nothing_is_written() {
    let server = TlsServer::start().await;
    let admin = server.client("postgres").await;
    admin.batch_execute("CREATE DATABASE fresh").await.unwrap();
    Webhookd::new(&server.verified_url("postgres"), &["migrate"])
        .output()
        .await
        .succeeded();
    let key = secret_key();
    let org = Uuid::new_v4().to_string();
    let run = [
        "run",
        "--allow-private-targets",
        "--admin-addr",
        "127.0.0.1:0",
    ];
    let commands: Vec<(&str, Vec<&str>)> = vec![
        ("fresh", vec!["migrate"]),
        ("postgres", create_args(&org, "http://127.0.0.1:9/never")),
        ("postgres", emit_args(&org)),
        ("postgres", vec!["webhooks", "list", "--org", &org]),
        ("postgres", run.to_vec()),
    ];
    for (database, args) in &commands {
        for case in misconfigurations(&server, database) {
            let outcome = Webhookd::new(&case.url, args).key(&key).output().await;
            let line = outcome.failed_with(case.code);
            let shown = format!("{} ({}): {line}", args.join(" "), case.what);
            for expected in &case.says {
                assert!(line.contains(expected), "should say {expected:?}: {shown}");
            }
            assert!(!line.contains(PASSWORD), "the password is shown: {shown}");
        }
    }
    // The LISTEN connection is checked like the pool's, and named.
    let wrong_listen = server.url(
        "localhost",
        "postgres",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            path(&server.file("other-ca.pem"))
        ),
    );
    let mut listen_run = run.to_vec();
    listen_run.extend(["--listen-database-url", &wrong_listen]);
    let outcome = Webhookd::new(&server.verified_url("postgres"), &listen_run)
        .key(&key)
        .output()
        .await;
    let line = outcome.failed_with(1);
    for expected in [
        "--listen-database-url",
        "certificate verify failed",
        "sslrootcert",
    ] {
        assert!(line.contains(expected), "should say {expected:?}: {line}");
    }
    assert!(!line.contains(PASSWORD), "the password is shown: {line}");

    let schemas = server
        .count(
            "fresh",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'outbox'",
        )
        .await;
    assert_eq!(schemas, 0, "migrate created nothing");
    for table in ["webhooks", "events", "deliveries"] {
        let rows = server
            .count("postgres", &format!("SELECT count(*) FROM outbox.{table}"))
            .await;
        assert_eq!(rows, 0, "nothing written to outbox.{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_over_verify_full() {
    let server = TlsServer::start().await;
    // The demo allows itself a minute for its deliveries: more than the
    // harness gives one-shot commands.
    let output = Webhookd::new(&server.verified_url("postgres"), &["demo"])
        .output_within(Duration::from_secs(120))
        .await;
    let (stdout, stderr) = (&output.stdout, &output.stderr);
    assert!(
        output.code == Some(0) && stdout.contains("Demo finished"),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        output.code
    );
    assert!(
        !stdout.contains(PASSWORD),
        "the password is shown:\n{stdout}"
    );
    assert!(
        !stderr.contains(PASSWORD),
        "the password is shown:\n{stderr}"
    );
    wait_until(
        "the demo's database is dropped",
        Duration::from_secs(10),
        || async {
            server
                .count(
                    "postgres",
                    "SELECT count(*) FROM pg_database WHERE datname LIKE 'webhookd_demo_%'",
                )
                .await
                == 0
        },
    )
    .await;
}
