//! `webhookd recover` and `webhookd deliveries list` (docs/CONTRACT.md §6):
//! the management API's recover and deliveries listing on the command line,
//! through the same `manage` functions. A listing is JSON when stdout is
//! not a terminal (scripts) and a table when it is (people).

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::{connected, print_json};
use crate::error::Result;
use crate::manage::{self, DeliveryFilter, DeliveryView, RecoverWindow};

/// `webhookd recover …`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Webhook UUID.
    #[arg(long, value_name = "WEBHOOK_ID")]
    pub webhook: Uuid,
    /// Recover failed deliveries created at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub since: String,
    /// … and before this one (default: up to now).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

/// `webhookd deliveries …`.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// A webhook's recent deliveries with their attempts, newest first: a
    /// JSON array, or a table when stdout is a terminal.
    List {
        /// Webhook UUID.
        #[arg(long, value_name = "WEBHOOK_ID")]
        webhook: Uuid,
        /// Only deliveries in this status (pending, delivered, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// At most this many (1–100, default 20).
        #[arg(long, value_name = "N")]
        limit: Option<String>,
    },
}

/// `recover`: checks the window before connecting, so bad input changes
/// nothing; prints `{"requeued": N}`.
pub(super) async fn recover(url: &str, args: RecoverArgs) -> Result<()> {
    let since = manage::parse_time(&args.since, "--since")?;
    let window = match &args.until {
        Some(until) => RecoverWindow::new(since, manage::parse_time(until, "--until")?)?,
        None => RecoverWindow::since(since),
    };
    let client = connected(url).await?;
    let requeued = manage::recover(&client, args.webhook, window).await?;
    println!("{}", serde_json::json!({ "requeued": requeued }));
    Ok(())
}

/// `deliveries list`.
pub(super) async fn deliveries(url: &str, command: DeliveriesCommand) -> Result<()> {
    let DeliveriesCommand::List {
        webhook,
        status,
        limit,
    } = command;
    let mut filter = DeliveryFilter::default();
    if let Some(status) = &status {
        filter = filter.with_status(status)?;
    }
    if let Some(limit) = &limit {
        filter = filter.with_limit(limit)?;
    }
    let client = connected(url).await?;
    let deliveries = manage::deliveries(&client, webhook, &filter).await?;
    if std::io::stdout().is_terminal() {
        print!("{}", table(&deliveries));
        Ok(())
    } else {
        print_json(&deliveries)
    }
}

/// One line per delivery, with its attempts indented below it.
fn table(deliveries: &[DeliveryView]) -> String {
    if deliveries.is_empty() {
        return "no deliveries\n".to_string();
    }
    let mut out = format!(
        "{:<24}  {:<36}  {:<20}  {:<9}  {:>8}  {}\n",
        "CREATED", "DELIVERY", "EVENT", "STATUS", "ATTEMPTS", "NEXT ATTEMPT / LAST ERROR"
    );
    for delivery in deliveries {
        let note = match (&delivery.next_attempt_at, &delivery.last_error) {
            (Some(next), _) => format!("next at {next}"),
            (None, Some(error)) => error.clone(),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "{:<24}  {:<36}  {:<20}  {:<9}  {:>8}  {note}\n",
            delivery.created_at, delivery.id, delivery.event, delivery.status, delivery.attempts
        ));
        for attempt in &delivery.attempt_log {
            let status = attempt
                .status_code
                .map(|code| format!(" HTTP {code}"))
                .unwrap_or_default();
            let asked = attempt
                .retry_after_seconds
                .map(|seconds| format!(", asked to retry after {seconds}s"))
                .unwrap_or_default();
            let reason = attempt
                .reason
                .as_deref()
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "    attempt {} at {}, {} ms, {}{status}{asked}{reason}\n",
                attempt.attempt, attempt.started_at, attempt.duration_ms, attempt.outcome
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::AttemptView;

    #[test]
    fn the_table_shows_each_delivery_with_its_attempts() {
        let delivery = DeliveryView {
            id: Uuid::nil(),
            event_id: Uuid::nil(),
            event: "post.created".into(),
            status: "pending".into(),
            attempts: 1,
            next_attempt_at: Some("2026-05-09T12:35:56.789Z".into()),
            last_attempt_at: Some("2026-05-09T12:34:56.789Z".into()),
            last_status_code: Some(503),
            last_error: Some("HTTP 503 Service Unavailable".into()),
            delivered_at: None,
            created_at: "2026-05-09T12:34:56.000Z".into(),
            attempt_log: vec![AttemptView {
                attempt: 1,
                started_at: "2026-05-09T12:34:56.789Z".into(),
                duration_ms: 12,
                outcome: "http_status".into(),
                status_code: Some(503),
                reason: Some("HTTP 503 Service Unavailable".into()),
                response_excerpt: None,
                retry_after_seconds: Some(60),
            }],
        };
        let text = table(&[delivery]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("CREATED"));
        assert!(
            lines[1].contains("post.created")
                && lines[1].contains("next at 2026-05-09T12:35:56.789Z")
        );
        assert!(lines[2].contains(
            "attempt 1 at 2026-05-09T12:34:56.789Z, 12 ms, http_status HTTP 503, \
             asked to retry after 60s: HTTP 503 Service Unavailable"
        ));
        assert_eq!(table(&[]), "no deliveries\n");
    }
}
