//! JSON log lines: one object per line,
//! `{"timestamp", "level", "target", "message", ...fields}`.
//!
//! The event's own fields and those of the spans it happened in (a delivery
//! attempt's `webhook_id`, `delivery_id`, `attempt`, `outcome`,
//! `duration_ms`) sit flat beside the four fixed keys, so a log pipeline
//! finds each at the same name on every line. Events that arrive through the
//! `log` crate (the database driver's) carry `log.file`, `log.line` and
//! `log.module_path` of the build machine; only their `log.target` is kept,
//! as `target`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The keys every line has, in this order; fields never replace them.
pub const FIXED_KEYS: [&str; 4] = ["timestamp", "level", "target", "message"];

/// The event formatter for `--log-format json`. Span fields must be recorded
/// with `JsonFields` (they are read back as JSON).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut visitor = EventFields::default();
        event.record(&mut visitor);
        let mut fields = visitor.fields;
        // Span fields, innermost last so it wins; the event's own win over all.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(recorded) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(span_fields)) = serde_json::from_str(recorded) {
                    for (name, value) in span_fields {
                        if !visitor.own.contains(&name) {
                            fields.insert(name, value);
                        }
                    }
                }
            }
        }
        let line = Line {
            timestamp: now(),
            level: event.metadata().level().as_str(),
            target: visitor
                .log_target
                .as_deref()
                .unwrap_or_else(|| event.metadata().target()),
            message: visitor.message.as_deref().unwrap_or(""),
            fields,
        };
        writeln!(writer, "{}", line.render())
    }
}

/// The line `main` ends with when a command fails and logs are JSON: the
/// error, at ERROR, with the exit status, so that every line on stderr is
/// one JSON object. It is written directly, whatever `RUST_LOG` filters.
pub fn exit_line(message: &str, exit_code: u8) -> String {
    let mut fields = Map::new();
    fields.insert("exit_code".to_string(), Value::from(exit_code));
    Line {
        timestamp: now(),
        level: "ERROR",
        target: super::OWN_TARGET,
        message,
        fields,
    }
    .render()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One line's content before it is written.
struct Line<'a> {
    timestamp: String,
    level: &'a str,
    target: &'a str,
    message: &'a str,
    fields: Map<String, Value>,
}

impl Line<'_> {
    fn render(&self) -> String {
        let fixed = [
            Value::from(self.timestamp.as_str()),
            Value::from(self.level),
            Value::from(self.target),
            Value::from(self.message),
        ];
        let mut out = String::from("{");
        let rest = self
            .fields
            .iter()
            .filter(|(name, _)| !FIXED_KEYS.contains(&name.as_str()));
        let entries = FIXED_KEYS.iter().copied().zip(fixed.iter());
        for (index, (name, value)) in entries
            .chain(rest.map(|(n, v)| (n.as_str(), v)))
            .enumerate()
        {
            if index > 0 {
                out.push(',');
            }
            out.push_str(&Value::from(name).to_string());
            out.push(':');
            out.push_str(&value.to_string());
        }
        out.push('}');
        out
    }
}

/// The event's message, fields and (for `log` records) original target.
#[derive(Default)]
struct EventFields {
    message: Option<String>,
    log_target: Option<String>,
    fields: Map<String, Value>,
    own: Vec<String>,
}

impl EventFields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                self.message = Some(match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                })
            }
            "log.target" => self.log_target = value.as_str().map(str::to_string),
            // The build machine's paths and line numbers: nothing an operator needs.
            name if name.starts_with("log.") => {}
            name => {
                self.own.push(name.to_string());
                self.fields.insert(name.to_string(), value);
            }
        }
    }
}

impl Visit for EventFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_keys_come_first_and_fields_cannot_replace_them() {
        let mut fields = Map::new();
        fields.insert("attempt".into(), Value::from(2));
        fields.insert("level".into(), Value::from("spoofed"));
        fields.insert("reason".into(), Value::from("line\nbreak \"quoted\""));
        let line = Line {
            timestamp: "2026-01-02T03:04:05.000006Z".into(),
            level: "WARN",
            target: "webhookd::delivery::dispatcher",
            message: "attempt failed; will retry",
            fields,
        }
        .render();
        assert_eq!(
            line,
            r#"{"timestamp":"2026-01-02T03:04:05.000006Z","level":"WARN","target":"webhookd::delivery::dispatcher","message":"attempt failed; will retry","attempt":2,"reason":"line\nbreak \"quoted\""}"#
        );
        assert!(!line.contains('\n'));
    }
}
