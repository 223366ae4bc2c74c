//! Sample event data: a valid `data` object for each event type, in the
//! style of docs/CONTRACT.md §2, for the demo, tests and examples.

use serde_json::{json, Value};

/// The event types of docs/CONTRACT.md §2, in the contract's order.
pub const EVENT_TYPES: [&str; 11] = [
    "post.created",
    "post.edited",
    "post.deleted",
    "post.tag_added",
    "post.tag_removed",
    "post.status_changed",
    "comment.created",
    "comment.edited",
    "comment.deleted",
    "vote.created",
    "vote.deleted",
];

/// A valid `data` object for `event_type`; `index` makes ids differ between
/// calls. Panics on a type the contract does not list.
pub fn sample_data(event_type: &str, index: usize) -> Value {
    let post = format!("553c3ef8b8cdcd1501ba{index:04}");
    let comment = format!("c-{index}");
    let vote = format!("v-{index}");
    match event_type {
        "post.created" => json!({"id": post, "title": "Add dark mode",
            "details": "Please support dark mode.", "board_id": "553c3ef8b8cdcd1501ba1234", "board_name": "Feature Requests"}),
        "post.edited" => {
            json!({"id": post, "title": "Add dark mode (all pages)", "changed_fields": ["title"]})
        }
        "post.deleted" => json!({"id": post, "title": "Duplicate request"}),
        "post.tag_added" | "post.tag_removed" => {
            json!({"id": post, "tag_id": "t-ux", "tag_name": "UX"})
        }
        "post.status_changed" => json!({"id": post, "status_id": "s-4",
            "status_group_code": "in-progress", "status_name": "In Progress",
            "previous_status_group_code": "open"}),
        "comment.created" => json!({"id": comment, "post_id": post, "content": "Yes please!"}),
        "comment.edited" => {
            json!({"id": comment, "post_id": post, "content": "Yes please, soon!"})
        }
        "comment.deleted" => json!({"id": comment, "post_id": post}),
        "vote.created" => json!({"id": vote, "post_id": post, "post_title": "Add dark mode"}),
        "vote.deleted" => json!({"id": vote, "post_id": post}),
        other => panic!("{other:?} is not an event type of docs/CONTRACT.md §2"),
    }
}
