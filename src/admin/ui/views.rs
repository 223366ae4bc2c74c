//! The sign-in form, the overview and the failures view, as HTML bodies
//! (the webhook view is in [`super::webhook`]). Every value goes through
//! [`esc`] or a helper that calls it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use uuid::Uuid;

use super::chart;
use super::html::{age, badge, card, esc, label, or_dash, page, reason_line, when};
use crate::manage::overview::{Failure, Overview, MAX_FAILURES, MAX_WEBHOOKS};
use crate::manage::view::time;
use crate::manage::WebhookView;

/// The sign-in form, with `error` above it when the last try failed.
pub fn login(error: Option<&str>) -> String {
    let error = error
        .map(|message| format!("<div class=\"error\">{}</div>", esc(message)))
        .unwrap_or_default();
    let body = format!(
        "<form class=\"login\" method=\"post\" action=\"/ui/login\">\
         <h1>Sign in</h1>{error}\
         <label for=\"token\">Admin token (<code>WEBHOOKD_ADMIN_TOKEN</code>)</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" \
         required autofocus><button id=\"sign-in\" type=\"submit\">Sign in</button></form>"
    );
    page("Sign in", false, &body)
}

/// The overview: backlog, chart and every webhook by organization.
pub fn overview(overview: &Overview) -> String {
    let depths = &overview.backlog;
    let mut body = format!(
        "<h1>Overview</h1><div class=\"cards\">{}{}{}{}{}</div>\
         <h2>Attempts per minute, last {} minutes</h2><div class=\"chart\">{}{}</div>",
        card("backlog-due", "due now", esc(depths.due)),
        card("backlog-pending", "pending", esc(depths.pending)),
        card(
            "backlog-oldest",
            "oldest due waits",
            age(depths.oldest_due_age_seconds)
        ),
        card("fanout-lag", "fan-out lag", age(depths.fanout_lag_seconds)),
        card("backlog-failed", "failed", esc(depths.failed)),
        esc(overview.rate.len()),
        chart::attempts_per_minute(&overview.rate),
        chart::legend(),
    );
    body.push_str("<h2>Webhooks</h2>");
    if overview.webhooks.is_empty() {
        body.push_str("<p class=\"muted\">No webhooks yet.</p>");
    }
    let mut by_org: BTreeMap<Uuid, Vec<&WebhookView>> = BTreeMap::new();
    for webhook in &overview.webhooks {
        by_org
            .entry(webhook.organization_id)
            .or_default()
            .push(webhook);
    }
    for (org, webhooks) in by_org {
        let _ = write!(body, "<h3>Organization {}</h3>", esc(org));
        body.push_str(&webhook_table(&webhooks));
    }
    if overview.truncated {
        let _ = write!(
            body,
            "<p class=\"notice\">Only the first {} webhooks are listed.</p>",
            esc(MAX_WEBHOOKS)
        );
    }
    page("Overview", true, &body)
}

fn webhook_table(webhooks: &[&WebhookView]) -> String {
    let mut table = String::from(
        "<table class=\"webhooks\"><tr><th>Label</th><th>URL</th><th>Status</th>\
         <th>Last success</th><th>Last failure</th><th class=\"num\">Pending</th>\
         <th class=\"num\">Failed</th></tr>",
    );
    for webhook in webhooks {
        let Some(health) = &webhook.health else {
            continue;
        };
        let reason = reason_line(health.last_failure_reason.as_deref());
        let _ = write!(
            table,
            "<tr data-webhook=\"{id}\"><td><a href=\"/ui/webhooks/{id}\">{}</a></td>\
             <td class=\"url\">{}</td><td>{}</td><td>{}</td><td>{}{reason}</td>\
             <td class=\"num pending\">{}</td><td class=\"num failed\">{}</td></tr>",
            label(&webhook.label),
            esc(&webhook.url),
            badge(&webhook.status) + &reason_line(health.disabled_reason.as_deref()),
            when(health.last_success_at.as_deref()),
            when(health.last_failure_at.as_deref()),
            esc(health.pending_deliveries),
            esc(health.failed_deliveries),
            id = esc(webhook.id),
        );
    }
    table.push_str("</table>");
    table
}

/// The newest failed deliveries across all webhooks.
pub fn failures(failures: &[Failure]) -> String {
    let mut body = format!(
        "<h1>Failures</h1><p class=\"muted\">The newest {} failed deliveries, newest first.</p>",
        esc(MAX_FAILURES)
    );
    if failures.is_empty() {
        body.push_str("<p class=\"muted\">No failed deliveries.</p>");
        return page("Failures", true, &body);
    }
    body.push_str(
        "<table class=\"failures\"><tr><th>Created</th><th>Webhook</th><th>Event, delivery id</th>\
         <th class=\"num\">Attempts</th><th>Last attempt</th><th class=\"num\">HTTP</th>\
         <th>Reason</th></tr>",
    );
    for failure in failures {
        let _ = write!(
            body,
            "<tr data-delivery=\"{}\"><td>{}</td><td><a href=\"/ui/webhooks/{}\">{}</a>\
             <div class=\"url\">{}</div><div class=\"muted\">org {}</div></td>\
             <td>{}<div class=\"id\">{}</div></td>\
             <td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"reason\">{}</td></tr>",
            esc(failure.id),
            when(Some(&time(failure.created_at))),
            esc(failure.webhook_id),
            label(&failure.label),
            esc(&failure.url),
            esc(failure.organization_id),
            esc(&failure.event),
            esc(failure.id),
            esc(failure.attempts),
            when(failure.last_attempt_at.map(time).as_deref()),
            or_dash(failure.last_status_code),
            or_dash(failure.last_error.as_deref()),
        );
    }
    body.push_str("</table>");
    page("Failures", true, &body)
}
