//! Outbound safety: non-public targets are refused at creation and at every delivery.
//!
//! No outside DNS: names resolve through [`MapResolver`], which answers only
//! what a test tells it. Names map either to blocked addresses (the guard must
//! refuse them before any connection, so nothing ever leaves the machine) or
//! to a [`Tripwire`] on loopback that counts every connection made to it.
//!
//! Not repeated here: address classification range by range (unit tests in
//! `src/guard.rs`) and redirects not being followed (`delivery.rs`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use uuid::Uuid;
use webhookd::config::RunArgs;
use webhookd::delivery::sender::connect::BoxFuture;
use webhookd::delivery::sender::Resolve;
use webhookd::manage::{self, CreateWebhook};
use webhookd::EventType;

use crate::harness::{sample, test_args, TestApp};

/// A resolver that knows only the names a test gives it, and logs each lookup.
#[derive(Clone, Default)]
pub(crate) struct MapResolver {
    names: Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>,
    lookups: Arc<Mutex<Vec<String>>>,
}

impl MapResolver {
    /// Answers `host` with `addresses` from now on.
    pub(crate) fn set(&self, host: &str, addresses: Vec<SocketAddr>) {
        self.names
            .lock()
            .unwrap()
            .insert(host.to_string(), addresses);
    }

    /// How often `host` was looked up.
    pub(crate) fn lookups_of(&self, host: &str) -> usize {
        self.lookups
            .lock()
            .unwrap()
            .iter()
            .filter(|name| *name == host)
            .count()
    }
}

impl Resolve for MapResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        _port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        self.lookups.lock().unwrap().push(host.to_string());
        let answer = self
            .names
            .lock()
            .unwrap()
            .get(host)
            .cloned()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host} is not in the test resolver"),
                )
            });
        Box::pin(async move { answer })
    }
}

/// Listeners on 127.0.0.1 and ::1 that count every connection accepted: a
/// refused target must leave both at zero.
struct Tripwire {
    v4: SocketAddr,
    v6: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Tripwire {
    async fn start() -> Tripwire {
        let accepted = Arc::new(AtomicUsize::new(0));
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let v6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
            .await
            .expect("IPv6 loopback");
        let tripwire = Tripwire {
            v4: v4.local_addr().unwrap(),
            v6: v6.local_addr().unwrap(),
            accepted: accepted.clone(),
        };
        for listener in [v4, v6] {
            let accepted = accepted.clone();
            // Ends with the test's runtime; holds no connection open.
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                }
            });
        }
        tripwire
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// Daemon settings as in production (no private targets), fast, with the
/// test's resolver and one retry.
fn guarded_config(app: &TestApp, resolver: &MapResolver) -> webhookd::daemon::DaemonConfig {
    let args = RunArgs {
        max_retries: 1,
        ..test_args()
    };
    let secrets = webhookd::config::SecretArgs::with_key(&app.key);
    let mut config = app.config_with(&args, &secrets, Arc::new(resolver.clone()));
    config.sender.allow_private_targets = false;
    config
}

/// One delivery's end state and its attempt log.
#[derive(Debug)]
struct Refused {
    status: String,
    attempts: i32,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    /// (outcome, reason) of each attempt, in order.
    log: Vec<(String, Option<String>)>,
}

async fn refused(app: &TestApp, webhook: Uuid) -> Refused {
    let client = app.db.client().await;
    let row = client
        .query_one(
            "SELECT id, status, attempts, last_status_code, last_error
             FROM outbox.deliveries WHERE webhook_id = $1",
            &[&webhook],
        )
        .await
        .unwrap();
    let delivery: Uuid = row.get("id");
    let log = client
        .query(
            "SELECT outcome, reason FROM outbox.delivery_attempts
             WHERE delivery_id = $1 ORDER BY attempt",
            &[&delivery],
        )
        .await
        .unwrap()
        .iter()
        .map(|a| (a.get(0), a.get(1)))
        .collect();
    Refused {
        status: row.get("status"),
        attempts: row.get("attempts"),
        last_status_code: row.get("last_status_code"),
        last_error: row.get("last_error"),
        log,
    }
}

/// Both attempts failed with `outcome` and `reason`, without any response.
fn assert_refused_twice(refused: &Refused, outcome: &str, reason: &str) {
    assert_eq!(refused.status, "failed", "{refused:?}");
    assert_eq!(refused.attempts, 2, "{refused:?}");
    assert_eq!(refused.last_status_code, None, "{refused:?}");
    assert_eq!(refused.last_error.as_deref(), Some(reason), "{refused:?}");
    let expected = (outcome.to_string(), Some(reason.to_string()));
    assert_eq!(refused.log, vec![expected.clone(), expected], "{refused:?}");
}

#[tokio::test]
async fn delivery_refuses_names_that_resolve_to_blocked_addresses_without_connecting() {
    let app = TestApp::new().await;
    let tripwire = Tripwire::start().await;
    let (port, port6) = (tripwire.v4.port(), tripwire.v6.port());
    let resolver = MapResolver::default();
    // (host, what it resolves to, URL port, expected reason)
    let cases = [
        (
            "internal.test",
            vec![at("10.0.0.7", 443)],
            443,
            "blocked address 10.0.0.7",
        ),
        (
            "metadata.test",
            vec![at("169.254.169.254", 443)],
            443,
            "blocked address 169.254.169.254",
        ),
        (
            "loop4.test",
            vec![tripwire.v4],
            port,
            "blocked address 127.0.0.1",
        ),
        (
            "mapped.test",
            vec![at("::ffff:127.0.0.1", port)],
            port,
            "blocked address ::ffff:127.0.0.1",
        ),
        (
            "loop6.test",
            vec![tripwire.v6],
            port6,
            "blocked address ::1",
        ),
        (
            "nat64.test",
            vec![at("64:ff9b::7f00:1", port)],
            port,
            "blocked address 64:ff9b::7f00:1",
        ),
        (
            "mixed.test",
            vec![at("10.0.0.1", port), tripwire.v4],
            port,
            "blocked address 10.0.0.1",
        ),
    ];
    let org = Uuid::new_v4();
    let mut webhooks = Vec::new();
    for (host, addresses, url_port, reason) in &cases {
        resolver.set(host, addresses.clone());
        // Created with private targets allowed, which skips resolving: the
        // refusal below is the delivery's own check.
        let url = format!("https://{host}:{url_port}/hook");
        webhooks.push((app.create_webhook(org, &url).await.id, *host, *reason));
    }

    let daemon = app.spawn_daemon(guarded_config(&app, &resolver));
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    app.wait_for_deliveries("status = 'failed'", cases.len() as i64)
        .await;
    daemon.stop().await.unwrap();

    for (webhook, host, reason) in webhooks {
        assert_refused_twice(&refused(&app, webhook).await, "blocked_address", reason);
        assert_eq!(
            resolver.lookups_of(host),
            2,
            "{host} is resolved afresh for every attempt"
        );
    }
    assert_eq!(
        tripwire.connections(),
        0,
        "a blocked target was connected to"
    );
}

#[tokio::test]
async fn delivery_refuses_ip_literal_urls_and_plain_http_without_connecting() {
    let app = TestApp::new().await;
    let tripwire = Tripwire::start().await;
    let resolver = MapResolver::default();
    let cases = [
        (
            format!("http://{}/hook", tripwire.v4),
            "invalid_url",
            "URL must use https:// (http:// is allowed only with --allow-private-targets)",
        ),
        (
            format!("https://{}/hook", tripwire.v4),
            "blocked_address",
            "blocked address 127.0.0.1",
        ),
        (
            format!("https://{}/hook", tripwire.v6),
            "blocked_address",
            "blocked address ::1",
        ),
        (
            format!("https://[::ffff:127.0.0.1]:{}/hook", tripwire.v4.port()),
            "blocked_address",
            "blocked address ::ffff:127.0.0.1",
        ),
        (
            "https://10.0.0.7/hook".to_string(),
            "blocked_address",
            "blocked address 10.0.0.7",
        ),
    ];
    let org = Uuid::new_v4();
    let mut webhooks = Vec::new();
    for (url, outcome, reason) in &cases {
        webhooks.push((app.create_webhook(org, url).await.id, *outcome, *reason));
    }

    let daemon = app.spawn_daemon(guarded_config(&app, &resolver));
    app.emit(org, "vote.created", sample(EventType::VoteCreated))
        .await;
    app.wait_for_deliveries("status = 'failed'", cases.len() as i64)
        .await;
    daemon.stop().await.unwrap();

    for (webhook, outcome, reason) in webhooks {
        assert_refused_twice(&refused(&app, webhook).await, outcome, reason);
    }
    assert!(
        resolver.lookups.lock().unwrap().is_empty(),
        "IP literals are not resolved"
    );
    assert_eq!(
        tripwire.connections(),
        0,
        "a blocked target was connected to"
    );
}

#[tokio::test]
async fn a_name_that_rebinds_to_loopback_after_creation_is_refused_at_delivery() {
    let app = TestApp::new().await;
    let tripwire = Tripwire::start().await;
    let resolver = MapResolver::default();
    let org = Uuid::new_v4();
    let url = format!("https://rebind.test:{}/hook", tripwire.v4.port());
    resolver.set("rebind.test", vec![at("93.184.216.34", tripwire.v4.port())]);
    let created = manage::create(
        &app.db.client().await,
        &app.secrets,
        &resolver,
        &CreateWebhook {
            organization_id: org,
            url: &url,
            label: "rebinding",
            allow_private_targets: false,
            signature_scheme: Default::default(),
        },
    )
    .await
    .expect("a public answer is accepted at creation");
    // The name now points at this machine, before the daemon ever sees it.
    resolver.set("rebind.test", vec![tripwire.v4]);

    let daemon = app.spawn_daemon(guarded_config(&app, &resolver));
    app.emit(org, "comment.created", sample(EventType::CommentCreated))
        .await;
    app.wait_for_deliveries("status = 'failed'", 1).await;
    daemon.stop().await.unwrap();

    assert_refused_twice(
        &refused(&app, created.id).await,
        "blocked_address",
        "blocked address 127.0.0.1",
    );
    assert_eq!(
        resolver.lookups_of("rebind.test"),
        3,
        "1 at creation, 2 at delivery"
    );
    assert_eq!(
        tripwire.connections(),
        0,
        "the rebound target was connected to"
    );
}

#[tokio::test]
async fn creation_refuses_http_and_hosts_resolving_to_any_blocked_address_and_stores_nothing() {
    let app = TestApp::new().await;
    let resolver = MapResolver::default();
    resolver.set("internal.test", vec![at("10.0.0.7", 443)]);
    resolver.set("metadata.test", vec![at("169.254.169.254", 443)]);
    resolver.set("mapped.test", vec![at("::ffff:127.0.0.1", 443)]);
    resolver.set("loop6.test", vec![at("::1", 443)]);
    resolver.set(
        "mixed.test",
        vec![at("10.0.0.1", 443), at("127.0.0.1", 443)],
    );
    // One public answer does not excuse a private one beside it.
    resolver.set(
        "half-public.test",
        vec![at("93.184.216.34", 443), at("192.168.1.1", 443)],
    );
    resolver.set("public.test", vec![at("93.184.216.34", 443)]);
    resolver.set("nothing.test", Vec::new());
    let cases = [
        (
            "https://internal.test/hook",
            "invalid webhook URL: host internal.test resolves to a private address (10.0.0.7), \
             which is blocked (use --allow-private-targets for local testing)",
        ),
        (
            "https://metadata.test/latest/meta-data",
            "invalid webhook URL: host metadata.test resolves to a link-local address \
             (169.254.169.254), which is blocked (use --allow-private-targets for local testing)",
        ),
        (
            "https://mapped.test/hook",
            "invalid webhook URL: host mapped.test resolves to a loopback address \
             (::ffff:127.0.0.1), which is blocked (use --allow-private-targets for local testing)",
        ),
        (
            "https://loop6.test/hook",
            "invalid webhook URL: host loop6.test resolves to a loopback address (::1), \
             which is blocked (use --allow-private-targets for local testing)",
        ),
        (
            "https://mixed.test/hook",
            "invalid webhook URL: host mixed.test resolves to a private address (10.0.0.1), \
             which is blocked (use --allow-private-targets for local testing)",
        ),
        (
            "https://half-public.test/hook",
            "invalid webhook URL: host half-public.test resolves to a private address \
             (192.168.1.1), which is blocked (use --allow-private-targets for local testing)",
        ),
        (
            "http://public.test/hook",
            "invalid webhook URL: URL must use https:// (http:// is allowed only with \
             --allow-private-targets)",
        ),
        (
            "https://127.0.0.1/hook",
            "invalid webhook URL: URL points at a loopback address (127.0.0.1), which is blocked",
        ),
        (
            "https://[fd00::1]/hook",
            "invalid webhook URL: URL points at a unique-local address (fd00::1), which is blocked",
        ),
        (
            "https://nothing.test/hook",
            "invalid webhook URL: host nothing.test resolves to no addresses",
        ),
        (
            "https://unknown.test/hook",
            "invalid webhook URL: cannot resolve host unknown.test: \
             unknown.test is not in the test resolver",
        ),
    ];
    let client = app.db.client().await;
    let org = Uuid::new_v4();
    for (url, message) in cases {
        let result = manage::create(
            &client,
            &app.secrets,
            &resolver,
            &CreateWebhook {
                organization_id: org,
                url,
                label: "refused",
                allow_private_targets: false,
                signature_scheme: Default::default(),
            },
        )
        .await;
        match result {
            Err(err) if err.kind() == webhookd::ErrorKind::Input => {
                assert_eq!(err.to_string(), message, "{url}")
            }
            other => panic!("{url}: expected an input error, got {other:?}"),
        }
    }
    assert_eq!(
        app.db.count("SELECT count(*) FROM outbox.webhooks").await,
        0,
        "a refused webhook left a row"
    );

    let created = manage::create(
        &client,
        &app.secrets,
        &resolver,
        &CreateWebhook {
            organization_id: org,
            url: "https://public.test/hook",
            label: "public",
            allow_private_targets: false,
            signature_scheme: Default::default(),
        },
    )
    .await
    .expect("a host resolving to a public address is accepted");
    assert_eq!(created.url, "https://public.test/hook");
    assert!(created.secret.is_some());
    assert_eq!(
        app.db.count("SELECT count(*) FROM outbox.webhooks").await,
        1
    );
}
