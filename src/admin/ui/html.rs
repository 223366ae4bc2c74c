//! HTML for the operator page: the one escaping function every interpolated
//! value goes through, the page frame with its inline style, and the small
//! formatting helpers (times, ages, badges) the views share. Labels, URLs,
//! reasons and response excerpts come from customers and receivers, so
//! nothing reaches the page unescaped.

use std::fmt::Display;

/// `value` as HTML text, safe inside elements and quoted attributes: the
/// five characters that can end either are replaced by entities.
pub fn esc(value: impl Display) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// A whole page: `title`, the navigation (when signed in) and `body`, which
/// the caller built from escaped values.
pub fn page(title: &str, signed_in: bool, body: &str) -> String {
    let nav = if signed_in {
        "<nav><a href=\"/ui/\">Overview</a><a href=\"/ui/failures\">Failures</a>\
         <form method=\"post\" action=\"/ui/logout\"><button>Sign out</button></form></nav>"
    } else {
        ""
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · webhookd</title><style>{STYLE}</style></head>\
         <body><header><span class=\"brand\">webhookd</span>{nav}</header>\
         <main>{body}</main></body></html>",
        esc(title)
    )
}

/// A time as the views show it, from the RFC 3339 form of `manage::view::time`:
/// `2026-05-09 12:34:56` (UTC, never wrapped); a dash for none.
pub fn when(at: Option<&str>) -> String {
    match at {
        Some(at) => format!(
            "<span class=\"t\">{}</span>",
            esc(at.get(..19).unwrap_or(at).replace('T', " "))
        ),
        None => "<span class=\"muted\">—</span>".to_string(),
    }
}

/// A duration in seconds, roughly: `0 s`, `42 s`, `7 min`, `3 h 5 min`.
pub fn age(seconds: f64) -> String {
    let seconds = seconds.max(0.0).round() as u64;
    let text = match seconds {
        0..=119 => format!("{seconds} s"),
        120..=7199 => format!("{} min", seconds / 60),
        _ => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
    };
    esc(text)
}

/// A status as a coloured badge.
pub fn badge(status: &str) -> String {
    let class = match status {
        "active" | "delivered" => "ok",
        "failed" | "revoked" | "disabled" => "bad",
        "pending" => "warn",
        _ => "muted",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(status))
}

/// A figure with its name below it; `id` lets tests find it.
pub fn card(id: &str, name: &str, value: String) -> String {
    format!(
        "<div class=\"card\" id=\"{}\"><b>{value}</b><span>{}</span></div>",
        esc(id),
        esc(name)
    )
}

/// A webhook's label, or a placeholder for an empty one.
pub fn label(label: &str) -> String {
    if label.is_empty() {
        "<span class=\"muted\">(no label)</span>".to_string()
    } else {
        esc(label)
    }
}

/// A line in red below a value (a failure or disable reason); nothing for none.
pub fn reason_line(reason: Option<&str>) -> String {
    reason
        .map(|reason| format!("<div class=\"reason\">{}</div>", esc(reason)))
        .unwrap_or_default()
}

/// An optional value, or a dash.
pub fn or_dash(value: Option<impl Display>) -> String {
    match value {
        Some(value) => esc(value),
        None => "<span class=\"muted\">—</span>".to_string(),
    }
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2328;background:#f6f8fa}\
header{display:flex;align-items:center;gap:24px;padding:10px 24px;background:#24292f;color:#fff}\
.brand{font-weight:600;font-size:16px}\
nav{display:flex;align-items:center;gap:16px;flex:1}\
nav a{color:#d0d7de;text-decoration:none}nav a:hover{color:#fff}\
nav form{margin-left:auto}\
nav button{background:none;border:1px solid #57606a;color:#d0d7de;border-radius:6px;padding:3px 10px;cursor:pointer}\
main{max-width:1200px;margin:0 auto;padding:20px 24px}\
h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:24px 0 8px}\
h3{font-size:13px;margin:16px 0 6px;color:#57606a;font-weight:600}\
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #d0d7de;border-radius:6px}\
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #eaeef2;vertical-align:top}\
th{font-size:12px;color:#57606a;font-weight:600;background:#f6f8fa}\
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\
a{color:#0969da}\
.muted{color:#8c959f}.t{white-space:nowrap}.id{font-family:ui-monospace,monospace;font-size:11px;color:#8c959f;white-space:nowrap}.reason{color:#cf222e}\
.url{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}\
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600}\
.badge.ok{background:#dafbe1;color:#1a7f37}.badge.bad{background:#ffebe9;color:#cf222e}\
.badge.warn{background:#fff8c5;color:#9a6700}.badge.muted{background:#eaeef2;color:#57606a}\
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:8px}\
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;min-width:140px}\
.card b{display:block;font-size:20px}.card>span{font-size:12px;color:#57606a}\
.chart{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px}\
.legend{font-size:12px;color:#57606a}.legend i{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}\
pre{margin:0;white-space:pre-wrap;word-break:break-all;font-size:12px;max-height:8em;overflow:auto}\
tr.log>td{padding:0 10px 10px 28px}table.attempts{border:none;background:#f6f8fa}table.attempts th{background:#eaeef2}\
.filters a{margin-right:12px}.filters a.on{font-weight:600;color:#1f2328;text-decoration:none}\
.login{max-width:360px;margin:60px auto;background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:24px}\
.login input{width:100%;padding:6px 8px;margin:6px 0 12px;border:1px solid #d0d7de;border-radius:6px}\
.login button{width:100%;padding:7px;background:#1f883d;color:#fff;border:none;border-radius:6px;font-weight:600;cursor:pointer}\
.error{background:#ffebe9;color:#cf222e;border:1px solid #ffcecb;border-radius:6px;padding:6px 10px;margin-bottom:12px}\
.notice{color:#9a6700}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_become_entities() {
        assert_eq!(
            esc("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(
            esc("\" onmouseover='x' & y"),
            "&quot; onmouseover=&#39;x&#39; &amp; y"
        );
        assert_eq!(esc("https://h/p?a=1&b=2"), "https://h/p?a=1&amp;b=2");
        assert_eq!(esc("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(esc(42), "42");
        // Escaping twice shows the first escape as text, as it should.
        assert_eq!(esc("&lt;"), "&amp;lt;");
    }

    #[test]
    fn helpers_escape_what_they_show() {
        assert_eq!(badge("<b>"), "<span class=\"badge muted\">&lt;b&gt;</span>");
        assert_eq!(or_dash(Some("a<b")), "a&lt;b");
        assert_eq!(
            when(Some("2026-05-09T12:34:56.789Z")),
            "<span class=\"t\">2026-05-09 12:34:56</span>"
        );
        assert_eq!(when(Some("<x>")), "<span class=\"t\">&lt;x&gt;</span>");
        assert_eq!(
            reason_line(Some("<i>")),
            "<div class=\"reason\">&lt;i&gt;</div>"
        );
        assert_eq!(reason_line(None), "");
        assert!(page("<t>", false, "").contains("<title>&lt;t&gt; · webhookd</title>"));
    }

    #[test]
    fn ages_are_rounded_to_a_readable_unit() {
        assert_eq!(age(0.2), "0 s");
        assert_eq!(age(42.0), "42 s");
        assert_eq!(age(600.0), "10 min");
        assert_eq!(age(3.0 * 3600.0 + 300.0), "3 h 5 min");
    }
}
