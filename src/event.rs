//! The 11 event types and the envelope a receiver gets (docs/CONTRACT.md §1–2). Pure.
//!
//! Validation of `data` is the database's job (it must hold for a plain INSERT
//! too); this module only names the types and builds the body bytes.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One of the 11 ProductBridge event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A post was created.
    PostCreated,
    /// A post's title, details, board or other fields changed.
    PostEdited,
    /// A post was soft-deleted.
    PostDeleted,
    /// A tag was added to a post.
    PostTagAdded,
    /// A tag was removed from a post.
    PostTagRemoved,
    /// A post's status moved between groups.
    PostStatusChanged,
    /// A comment was created.
    CommentCreated,
    /// A comment's content changed.
    CommentEdited,
    /// A comment was soft-deleted.
    CommentDeleted,
    /// A user upvoted a post.
    VoteCreated,
    /// A user removed an upvote.
    VoteDeleted,
}

impl EventType {
    /// All types, in the order of docs/CONTRACT.md §2.
    pub const ALL: [EventType; 11] = [
        EventType::PostCreated,
        EventType::PostEdited,
        EventType::PostDeleted,
        EventType::PostTagAdded,
        EventType::PostTagRemoved,
        EventType::PostStatusChanged,
        EventType::CommentCreated,
        EventType::CommentEdited,
        EventType::CommentDeleted,
        EventType::VoteCreated,
        EventType::VoteDeleted,
    ];

    /// The wire name, e.g. `post.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PostCreated => "post.created",
            EventType::PostEdited => "post.edited",
            EventType::PostDeleted => "post.deleted",
            EventType::PostTagAdded => "post.tag_added",
            EventType::PostTagRemoved => "post.tag_removed",
            EventType::PostStatusChanged => "post.status_changed",
            EventType::CommentCreated => "comment.created",
            EventType::CommentEdited => "comment.edited",
            EventType::CommentDeleted => "comment.deleted",
            EventType::VoteCreated => "vote.created",
            EventType::VoteDeleted => "vote.deleted",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not one of the 11 event types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type \"{0}\"")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|event| event.as_str() == name)
            .ok_or_else(|| UnknownEventType(name.to_string()))
    }
}

/// `occurred_at` as docs/CONTRACT.md §1 wants it: RFC 3339, UTC, milliseconds, `Z`.
pub fn format_occurred_at(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Builds the envelope body. `data_json` is the event's `data` exactly as the
/// database serialises it, so the bytes depend only on the stored event and are
/// identical on every attempt and for every webhook.
pub fn envelope(
    event: &str,
    organization_id: Uuid,
    occurred_at: DateTime<Utc>,
    data_json: &str,
) -> Bytes {
    // serde_json escapes the event name; the other fields need no escaping.
    let event = serde_json::to_string(event).unwrap_or_else(|_| "\"\"".to_string());
    let body = format!(
        "{{\"event\":{event},\"organization_id\":\"{organization_id}\",\"occurred_at\":\"{}\",\"data\":{data_json}}}",
        format_occurred_at(occurred_at)
    );
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_type_round_trips_through_its_wire_name() {
        for event in EventType::ALL {
            assert_eq!(event.as_str().parse::<EventType>(), Ok(event));
        }
        assert!("post.updated".parse::<EventType>().is_err());
    }

    #[test]
    fn occurred_at_has_milliseconds_and_z() {
        let at = Utc.with_ymd_and_hms(2026, 5, 9, 12, 34, 56).unwrap()
            + chrono::Duration::microseconds(789_123);
        assert_eq!(format_occurred_at(at), "2026-05-09T12:34:56.789Z");
    }

    #[test]
    fn envelope_is_valid_json_with_the_four_fields() {
        let org = Uuid::new_v4();
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let body = envelope("vote.created", org, at, r#"{"id": "v1", "post_id": "p1"}"#);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["event"], "vote.created");
        assert_eq!(value["organization_id"], org.to_string());
        assert_eq!(value["occurred_at"], "2026-01-02T03:04:05.000Z");
        assert_eq!(value["data"]["post_id"], "p1");
    }
}
