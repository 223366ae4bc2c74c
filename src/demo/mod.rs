//! `webhookd demo`: the whole delivery path in one command, on an embedded
//! default. It finds or starts a PostgreSQL server, works in a database of its
//! own, runs a signature-verifying receiver and the daemon in-process, emits
//! one event of each type and shows every delivery, the retry and the
//! dashboard's status rows; then removes everything it made.

pub mod cluster;
pub mod receiver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::{RunArgs, SecretArgs};
use crate::db;
use crate::delivery::sender::SystemResolver;
use crate::error::{Error, Result};
use crate::event::EventType;
use crate::manage::{self, CreateWebhook};
use crate::shutdown;
use crate::signing::SecretBox;
use cluster::ThrowawayCluster;
use receiver::{Arrival, Behaviour, DemoReceiver};

/// How long the demo waits for all deliveries before it reports a failure.
const DEMO_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the demo. `database_url` is the server the user named
/// (`--database-url` or `DATABASE_URL`); without one the demo tries the
/// default and else starts a throwaway server. `secret_key` is
/// `WEBHOOKD_SECRET_KEY` if set; else the demo makes one up.
pub async fn run(database_url: Option<String>, secret_key: Option<&str>) -> Result<()> {
    let secret_key = secret_key
        .map(str::to_string)
        .unwrap_or_else(SecretBox::generate_key_base64);
    let mut place = DemoDatabase::open(database_url).await?;
    // Ctrl-C must still clean up: a throwaway server outlives this process.
    let outcome = tokio::select! {
        outcome = run_in(&place.url, &secret_key) => outcome,
        _ = crate::cli::wait_for_signal() => Err(Error::other("demo interrupted; cleaned up".to_string())),
    };
    place.close().await;
    outcome
}

/// Where the demo's data lives, and how to get rid of it.
struct DemoDatabase {
    url: String,
    /// (server URL, database name) to drop, when the demo created a database.
    created: Option<(String, String)>,
    cluster: Option<ThrowawayCluster>,
}

impl DemoDatabase {
    async fn open(database_url: Option<String>) -> Result<DemoDatabase> {
        let server_url = match database_url {
            Some(url) => url,
            None => {
                let default = db::DATABASE_URL_DEFAULT.to_string();
                match db::connect_single(&default).await {
                    Ok(_) => default,
                    Err(_) => {
                        println!("No PostgreSQL answers at 127.0.0.1:5432; starting a throwaway server from the installed binaries…");
                        let cluster = ThrowawayCluster::start().await.map_err(|err| {
                            Error::other(format!("cannot start a throwaway PostgreSQL: {err}"))
                        })?;
                        let url = cluster.url();
                        println!("  database: throwaway cluster at {url} (removed afterwards)");
                        return Ok(DemoDatabase {
                            url,
                            created: None,
                            cluster: Some(cluster),
                        });
                    }
                }
            }
        };
        let name = format!(
            "webhookd_demo_{}",
            &Uuid::new_v4().simple().to_string()[..12]
        );
        let admin = db::connect_single(&server_url).await?;
        db::create_database(&admin, &name).await?;
        println!(
            "  database: {name} on {} (dropped afterwards)",
            db::redact_url(&server_url)
        );
        Ok(DemoDatabase {
            url: db::url_with_database(&server_url, &name),
            created: Some((server_url, name)),
            cluster: None,
        })
    }

    async fn close(&mut self) {
        if let Some((server_url, name)) = self.created.take() {
            if let Ok(admin) = db::connect_single(&server_url).await {
                let _ = db::drop_database(&admin, &name).await;
            }
        }
        if let Some(mut cluster) = self.cluster.take() {
            if let Err(err) = cluster.stop().await {
                eprintln!("webhookd: {err}");
            }
        }
    }
}

async fn run_in(url: &str, secret_key: &str) -> Result<()> {
    let mut client = db::connect_single(url).await?;
    db::migrate(&mut client).await?;
    let secrets = SecretBox::from_base64(secret_key)?;

    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let receiver = DemoReceiver::start(arrivals_tx)
        .await
        .map_err(|err| Error::other(format!("cannot start the demo receiver: {err}")))?;
    println!(
        "  receiver: http://{} (verifies every signature)",
        receiver.address
    );

    let organization = Uuid::new_v4();
    for (name, behaviour, label) in [
        ("healthy", Behaviour::Healthy, "healthy receiver"),
        (
            "flaky",
            Behaviour::FailFirstAttempt,
            "flaky receiver (503 on first attempts)",
        ),
    ] {
        let request = CreateWebhook {
            organization_id: organization,
            url: &receiver.url(name),
            label,
            allow_private_targets: true,
        };
        let created = manage::create(&client, &secrets, &SystemResolver, &request).await?;
        let secret = created.secret.clone().unwrap_or_default();
        receiver.add_endpoint(name, &secret, behaviour);
        println!("  webhook:  {label:<40} {}  {}", created.id, created.url);
    }

    let args = RunArgs {
        retry_base_delay: Duration::from_secs(1),
        allow_private_targets: true,
        poll_interval: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(5),
        admin_addr: ([127, 0, 0, 1], 0).into(),
        ..RunArgs::default()
    };
    let config = args.validate(
        url,
        &SecretArgs::with_key(secret_key),
        Arc::new(SystemResolver),
    )?;
    let (trigger, shutdown) = shutdown::channel();
    let daemon = tokio::spawn(crate::daemon::run(config, shutdown));

    let started = Instant::now();
    for (index, event) in EventType::ALL.into_iter().enumerate() {
        crate::emit(&client, organization, event, &sample_data(event, index)).await?;
    }
    println!("\nEmitted one event of each of the 11 types for organization {organization}; the daemon delivers them:\n");

    let expected = EventType::ALL.len() * 2;
    let mut delivered = 0;
    let deadline = tokio::time::Instant::now() + DEMO_DEADLINE;
    let mut failure = None;
    while delivered < expected {
        tokio::select! {
            arrival = arrivals.recv() => match arrival {
                Some(arrival) => {
                    print_arrival(started, &arrival);
                    if !arrival.signature_ok {
                        failure = Some("a delivery arrived with a signature that does not verify".to_string());
                    }
                    if arrival.status == 200 {
                        delivered += 1;
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                failure = Some(format!("only {delivered} of {expected} deliveries arrived within {}s", DEMO_DEADLINE.as_secs()));
                break;
            }
        }
    }
    wait_until_settled(&client, organization).await?;
    println!(
        "\n{delivered} of {expected} deliveries accepted in {:.1}s. outbox.webhook_status now says:\n",
        started.elapsed().as_secs_f64()
    );
    print_status(&client, organization).await?;

    trigger.trigger();
    match daemon.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(err),
        Err(err) => return Err(Error::other(format!("the daemon task failed: {err}"))),
    }
    match failure {
        Some(reason) => Err(Error::other(format!("demo failed: {reason}"))),
        None => {
            println!(
                "\nDemo finished: every delivery was signed, verified and recorded. Cleaning up."
            );
            Ok(())
        }
    }
}

fn print_arrival(started: Instant, arrival: &Arrival) {
    let verdict = if arrival.signature_ok {
        "signature ok"
    } else {
        "SIGNATURE INVALID"
    };
    let note = match (arrival.status, arrival.repeat) {
        (503, _) => "  (fails on purpose; retried in ~1s)",
        (200, true) => "  (retry succeeded)",
        _ => "",
    };
    println!(
        "  +{:>6.3}s  {:<8} {:<20} delivery {}  {verdict}  -> HTTP {}{note}",
        started.elapsed().as_secs_f64(),
        arrival.endpoint,
        arrival.event,
        arrival.delivery_id,
        arrival.status,
    );
}

/// Waits (bounded) until no delivery of the organization is pending: the
/// last write-backs land a moment after the receiver answered.
async fn wait_until_settled(client: &tokio_postgres::Client, organization: Uuid) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let webhooks = manage::list(client, organization).await?;
        let pending = |webhook: &manage::WebhookView| {
            webhook
                .health
                .as_ref()
                .map_or(0, |health| health.pending_deliveries)
        };
        if webhooks.iter().all(|webhook| pending(webhook) == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The organization's rows of `outbox.webhook_status`, as a table.
async fn print_status(client: &tokio_postgres::Client, organization: Uuid) -> Result<()> {
    let row = |cells: [&str; 7]| {
        println!(
            "  {:<40} {:<7} {:<25} {:<25} {:<30} {:>7} {:>6}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
        )
    };
    row([
        "label",
        "status",
        "last_success_at",
        "last_failure_at",
        "last_failure_reason",
        "pending",
        "failed",
    ]);
    for webhook in manage::list(client, organization).await? {
        let Some(health) = webhook.health else {
            continue;
        };
        row([
            &webhook.label,
            &webhook.status,
            health.last_success_at.as_deref().unwrap_or("-"),
            health.last_failure_at.as_deref().unwrap_or("-"),
            health.last_failure_reason.as_deref().unwrap_or("-"),
            &health.pending_deliveries.to_string(),
            &health.failed_deliveries.to_string(),
        ]);
    }
    Ok(())
}

/// A valid `data` object for each type, in the style of docs/CONTRACT.md §2.
pub fn sample_data(event: EventType, index: usize) -> serde_json::Value {
    use serde_json::json;
    let post = format!("553c3ef8b8cdcd1501ba{index:04}");
    match event {
        EventType::PostCreated => json!({"id": post, "title": "Add dark mode",
            "details": "Please support dark mode.", "board_id": "553c3ef8b8cdcd1501ba1234", "board_name": "Feature Requests"}),
        EventType::PostEdited => {
            json!({"id": post, "title": "Add dark mode (all pages)", "changed_fields": ["title"]})
        }
        EventType::PostDeleted => json!({"id": post, "title": "Duplicate request"}),
        EventType::PostTagAdded => json!({"id": post, "tag_id": "t-ux", "tag_name": "UX"}),
        EventType::PostTagRemoved => json!({"id": post, "tag_id": "t-ux", "tag_name": "UX"}),
        EventType::PostStatusChanged => {
            json!({"id": post, "status_id": "s-4", "status_group_code": "in-progress",
            "status_name": "In Progress", "previous_status_group_code": "open"})
        }
        EventType::CommentCreated => {
            json!({"id": format!("c-{index}"), "post_id": post, "content": "Yes please!"})
        }
        EventType::CommentEdited => {
            json!({"id": format!("c-{index}"), "post_id": post, "content": "Yes please, soon!"})
        }
        EventType::CommentDeleted => json!({"id": format!("c-{index}"), "post_id": post}),
        EventType::VoteCreated => {
            json!({"id": format!("v-{index}"), "post_id": post, "post_title": "Add dark mode"})
        }
        EventType::VoteDeleted => json!({"id": format!("v-{index}"), "post_id": post}),
    }
}
