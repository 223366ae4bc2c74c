//! The webhook view: the webhook with its status fields and its recent
//! deliveries, each with its attempts (status code, duration, outcome,
//! reason, response excerpt), as the management API lists them.

use std::fmt::Write as _;

use super::html::{badge, card, esc, label, or_dash, page, when};
use crate::manage::{AttemptView, DeliveryView, WebhookView};

/// Statuses the view filters by.
const FILTERS: [&str; 4] = ["pending", "delivered", "failed", "cancelled"];

/// The webhook, its deliveries (filtered by `status` when given) and their attempts.
pub fn render(webhook: &WebhookView, status: Option<&str>, deliveries: &[DeliveryView]) -> String {
    let mut body = format!(
        "<h1>{} {}</h1><p class=\"url\">{}</p>",
        label(&webhook.label),
        badge(&webhook.status),
        esc(&webhook.url)
    );
    if let Some(health) = &webhook.health {
        let _ = write!(
            body,
            "<div class=\"cards\">{}{}{}{}</div>",
            card("webhook-pending", "pending", esc(health.pending_deliveries)),
            card("webhook-failed", "failed", esc(health.failed_deliveries)),
            card(
                "last-success",
                "last success",
                when(health.last_success_at.as_deref())
            ),
            card(
                "last-failure",
                "last failure",
                when(health.last_failure_at.as_deref())
            ),
        );
        if let Some(reason) = &health.last_failure_reason {
            let _ = write!(
                body,
                "<p>Last failure reason: <span class=\"reason\">{}</span></p>",
                esc(reason)
            );
        }
        if let Some(reason) = &health.disabled_reason {
            let _ = write!(
                body,
                "<p>Disabled {}: <span class=\"reason\">{}</span></p>",
                when(health.disabled_at.as_deref()),
                esc(reason)
            );
        }
    }
    let _ = write!(
        body,
        "<p class=\"muted\">Organization {} · id {} · created {}</p>",
        esc(webhook.organization_id),
        esc(webhook.id),
        when(Some(&webhook.created_at))
    );
    body.push_str(&filters(webhook, status));
    body.push_str(&delivery_table(deliveries));
    page(&format!("Webhook {}", webhook.label), true, &body)
}

fn filters(webhook: &WebhookView, status: Option<&str>) -> String {
    let link = |name: &str, query: &str, on: bool| {
        format!(
            "<a href=\"/ui/webhooks/{}{}\"{}>{}</a>",
            esc(webhook.id),
            esc(query),
            if on { " class=\"on\"" } else { "" },
            esc(name)
        )
    };
    let mut out = String::from("<h2>Recent deliveries</h2><p class=\"filters\">");
    out.push_str(&link("all", "", status.is_none()));
    for name in FILTERS {
        out.push_str(&link(
            name,
            &format!("?status={name}"),
            status == Some(name),
        ));
    }
    out.push_str("</p>");
    out
}

fn delivery_table(deliveries: &[DeliveryView]) -> String {
    if deliveries.is_empty() {
        return "<p class=\"muted\">No deliveries.</p>".to_string();
    }
    let mut table = String::from(
        "<table class=\"deliveries\"><tr><th>Created</th><th>Event, delivery id</th><th>Status</th>\
         <th class=\"num\">Attempts</th><th>Next attempt</th><th>Delivered</th></tr>",
    );
    for delivery in deliveries {
        let _ = write!(
            table,
            "<tr data-delivery=\"{}\" data-status=\"{}\"><td>{}</td>\
             <td>{}<div class=\"id\">{}</div></td><td>{}</td><td class=\"num\">{}</td><td>{}</td>\
             <td>{}</td></tr><tr class=\"log\"><td colspan=\"6\">{}</td></tr>",
            esc(delivery.id),
            esc(&delivery.status),
            when(Some(&delivery.created_at)),
            esc(&delivery.event),
            esc(delivery.id),
            badge(&delivery.status),
            esc(delivery.attempts),
            when(delivery.next_attempt_at.as_deref()),
            when(delivery.delivered_at.as_deref()),
            attempt_log(&delivery.attempt_log),
        );
    }
    table.push_str("</table>");
    table
}

fn attempt_log(attempts: &[AttemptView]) -> String {
    if attempts.is_empty() {
        return "<span class=\"muted\">no attempt recorded</span>".to_string();
    }
    let mut log = String::from(
        "<table class=\"attempts\"><tr><th>#</th><th>Started</th><th class=\"num\">ms</th>\
         <th>Outcome</th><th class=\"num\">HTTP</th><th>Reason</th><th>Response</th></tr>",
    );
    for attempt in attempts {
        let excerpt = match attempt.response_excerpt.as_deref() {
            Some(text) if !text.is_empty() => format!("<pre>{}</pre>", esc(text)),
            _ => or_dash(None::<&str>),
        };
        let _ = write!(
            log,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"reason\">{}</td><td>{excerpt}</td></tr>",
            esc(attempt.attempt),
            when(Some(&attempt.started_at)),
            esc(attempt.duration_ms),
            esc(&attempt.outcome),
            or_dash(attempt.status_code),
            or_dash(attempt.reason.as_deref()),
        );
    }
    log.push_str("</table>");
    log
}
