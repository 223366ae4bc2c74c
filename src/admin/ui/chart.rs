//! The overview's chart: attempts per minute as inline SVG, drawn on the
//! server, delivered attempts in green with the others stacked above them
//! in red. Every text in it goes through [`esc`].

use std::fmt::Write as _;

use super::html::esc;
use crate::manage::overview::MinuteCount;

const WIDTH: f64 = 1100.0;
const HEIGHT: f64 = 150.0;
/// Room on the left for the scale and below for the times.
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 20.0;
const DELIVERED: &str = "#2da44e";
const NOT_DELIVERED: &str = "#cf222e";

/// The chart of `minutes`, oldest first.
pub fn attempts_per_minute(minutes: &[MinuteCount]) -> String {
    let peak = minutes
        .iter()
        .map(|m| m.delivered + m.not_delivered)
        .max()
        .unwrap_or(0)
        .max(1);
    let plot = HEIGHT - BOTTOM;
    let slot = (WIDTH - LEFT) / minutes.len().max(1) as f64;
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"attempts per minute\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"100%\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\" fill=\"#57606a\">\
         <line x1=\"{LEFT}\" y1=\"{plot}\" x2=\"{WIDTH}\" y2=\"{plot}\" stroke=\"#d0d7de\"/>\
         <text x=\"{x}\" y=\"10\" text-anchor=\"end\">{}</text>\
         <text x=\"{x}\" y=\"{plot}\" text-anchor=\"end\">0</text>",
        esc(peak),
        x = LEFT - 6.0,
    );
    for (index, minute) in minutes.iter().enumerate() {
        let x = LEFT + index as f64 * slot + 1.0;
        let good = minute.delivered as f64 / peak as f64 * (plot - 12.0);
        let bad = minute.not_delivered as f64 / peak as f64 * (plot - 12.0);
        let title = format!(
            "{}: {} delivered, {} not delivered",
            minute.minute.format("%H:%M"),
            minute.delivered,
            minute.not_delivered
        );
        let _ = write!(
            svg,
            "<g><title>{}</title>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{good:.1}\" fill=\"{DELIVERED}\"/>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{bad:.1}\" fill=\"{NOT_DELIVERED}\"/></g>",
            esc(title),
            plot - good,
            plot - good - bad,
            w = (slot - 2.0).max(1.0),
        );
        if index % 5 == 0 || index + 1 == minutes.len() {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + slot / 2.0,
                HEIGHT - 4.0,
                esc(minute.minute.format("%H:%M"))
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The chart's legend.
pub fn legend() -> String {
    format!(
        "<div class=\"legend\">UTC, per minute of the attempt's start:\
         <i style=\"background:{DELIVERED}\"></i>delivered\
         <i style=\"background:{NOT_DELIVERED}\"></i>not delivered (retried or failed)</div>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn bars_scale_to_the_busiest_minute() {
        let at = |m| Utc.with_ymd_and_hms(2026, 5, 9, 12, m, 0).unwrap();
        let minutes = [
            MinuteCount {
                minute: at(0),
                delivered: 0,
                not_delivered: 0,
            },
            MinuteCount {
                minute: at(1),
                delivered: 30,
                not_delivered: 10,
            },
        ];
        let svg = attempts_per_minute(&minutes);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(
            svg.contains(">40</text>"),
            "the scale shows the peak: {svg}"
        );
        assert!(svg.contains("<title>12:01: 30 delivered, 10 not delivered</title>"));
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(!attempts_per_minute(&[]).contains("NaN"));
    }
}
