//! Text views of a store for people: the machine summary `fleet-agent demo` prints at its end
//! and `fleet-agent receive ls` prints for a store, and the one-line JSON `receive show` uses.

use serde_json::{Map, Value};

use crate::MachineSummary;

/// `value` as compact JSON, cut at `max` bytes (on a char boundary) with `…`.
pub fn compact(value: &Value, max: usize) -> String {
    let text = value.to_string();
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Print machine summaries under `title`: per machine its counts, last seen and size, then
/// per widget its count and latest sample (used by `demo` and `receive ls`).
pub fn print_summary(summaries: &[MachineSummary], title: &str) {
    println!("{title}");
    if summaries.is_empty() {
        println!("  nothing stored");
    }
    for machine in summaries {
        println!(
            "  machine {}: {} v2 batches with {} records; {} Atlas reports; {} Atlas widget logs",
            machine.machine_id,
            machine.batch_count,
            machine.record_count,
            machine.report_count,
            machine.widget_log_count
        );
        println!(
            "    last seen {}, {} on disk{}",
            machine.last_seen.as_deref().unwrap_or("never"),
            human_bytes(machine.bytes),
            if machine.unreadable_rows > 0 {
                format!(", {} rows that do not authenticate (see `receive verify`)", machine.unreadable_rows)
            } else {
                String::new()
            }
        );
        for widget in &machine.widgets {
            let data = widget.sample.get("data").unwrap_or(&widget.sample);
            println!("    {:<13} {:<12} {:>4}  {}", widget.widget, widget.kind, widget.count, compact(data, 96));
        }
    }
}

/// One line of `receive show`: received time, kind, widget and the row's data (a record's or
/// widget log's `data`, a report's `metrics`) as compact JSON cut at 120 bytes.
pub fn row_line(received: &str, row: &Map<String, Value>) -> String {
    let kind = row.get("kind").and_then(Value::as_str).unwrap_or("?");
    let widget = row.get("widget").and_then(Value::as_str).unwrap_or("-");
    let body =
        row.get("record").or_else(|| row.get("log")).or_else(|| row.get("report").and_then(|r| r.get("metrics")));
    let data = body.map(|b| b.get("data").unwrap_or(b)).unwrap_or(&Value::Null);
    format!("{received}  {kind:<10} {widget:<12} {}", compact(data, 120))
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compact_cuts_on_char_boundaries() {
        assert_eq!(compact(&json!("abc"), 10), "\"abc\"");
        assert_eq!(compact(&json!("ééééé"), 4), "\"é…");
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(3 * 1_048_576), "3.0 MiB");
    }
}
