//! The widget-log export of `GET /api/fleet/widget-logs?format=csv`: RFC 4180 CSV.
//!
//! Columns `ID,Serial Number,Timestamp,Level,Widget Type,Message,Data` (the Atlas export's),
//! `Serial Number` = the machine id, `Data` = the compact JSON of the entry's data. Lines end in
//! CRLF; a field is quoted when it holds a comma, a double quote, CR or LF, and quotes inside
//! are doubled.

use std::borrow::Cow;

use super::store::LogRow;

/// The header line's columns.
pub const CSV_COLUMNS: [&str; 7] = ["ID", "Serial Number", "Timestamp", "Level", "Widget Type", "Message", "Data"];

/// One field, quoted if it needs to be.
pub fn csv_field(text: &str) -> Cow<'_, str> {
    if text.contains([',', '"', '\r', '\n']) {
        Cow::Owned(format!("\"{}\"", text.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(text)
    }
}

/// The whole CSV document, header first.
pub fn to_csv(rows: &[LogRow]) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for row in rows {
        let id = row.id.to_string();
        let data = row.data.to_string();
        let fields = [&id, &row.machine_id, &row.timestamp, &row.level, &row.widget_type, &row.message, &data];
        let line: Vec<Cow<'_, str>> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoting_follows_rfc_4180() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        let row = LogRow {
            id: 1,
            machine_id: "m1".into(),
            timestamp: "2026-11-22T13:00:00".into(),
            level: "info".into(),
            widget_type: "ping".into(),
            message: "a, \"b\"\nc".into(),
            data: json!({"latency": 1.5, "target": "x"}),
        };
        assert_eq!(
            to_csv(&[row]),
            "ID,Serial Number,Timestamp,Level,Widget Type,Message,Data\r\n\
             1,m1,2026-11-22T13:00:00,info,ping,\"a, \"\"b\"\"\nc\",\"{\"\"latency\"\":1.5,\"\"target\"\":\"\"x\"\"}\"\r\n"
        );
    }
}
