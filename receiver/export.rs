//! The widget-log export of `GET /api/fleet/widget-logs`, written row by row as the store is
//! read ([`Writer`]): constant memory whatever the store's size, stopped at a byte cap.
//!
//! # CSV (`format=csv`)
//!
//! RFC 4180: columns `ID,Serial Number,Timestamp,Level,Widget Type,Message,Data` (the Atlas
//! export's), `Serial Number` = the machine id, `Data` = the compact JSON of the entry's data.
//! Lines end in CRLF.
//!
//! Safe to open in a spreadsheet, as OWASP's "CSV Injection" page recommends, in every column:
//! a cell starting with `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'` (so a
//! spreadsheet shows it as text instead of evaluating it), and every cell is enclosed in double
//! quotes with quotes inside doubled (so a `,` or `"` in a message cannot start a new cell).
//! After the rows, `# truncated: …` when the byte cap stopped the export and
//! `# skipped N tampered rows …` when rows failed authentication; neither can start with a
//! formula character.
//!
//! # JSON (`format=json`, the default)
//!
//! `{"logs":[{id, machine_id, timestamp, level, widget_type, message, data}…],"count":n,
//! "truncated":B,"skipped_tampered":n}`: the totals come last because the rows are streamed.

use std::io::{self, Write};

use super::storage::LogRow;

/// The header line's columns.
pub const CSV_COLUMNS: [&str; 7] = ["ID", "Serial Number", "Timestamp", "Level", "Widget Type", "Message", "Data"];

/// Characters that make a spreadsheet evaluate a cell (OWASP CSV injection).
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One cell: neutralised if it starts like a formula, always quoted, quotes doubled.
pub fn csv_field(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push('"');
    if text.starts_with(FORMULA_START) {
        out.push('\'');
    }
    for c in text.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// One CSV line (CRLF-terminated) of cells.
pub fn csv_line(cells: &[&str]) -> String {
    let mut line = cells.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",");
    line.push_str("\r\n");
    line
}

/// One row as a CSV line.
pub fn csv_row(row: &LogRow) -> String {
    let id = row.id.to_string();
    let data = row.data.to_string();
    csv_line(&[&id, &row.machine_id, &row.timestamp, &row.level, &row.widget_type, &row.message, &data])
}

/// The export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// `format=json`.
    Json,
    /// `format=csv`.
    Csv,
}

impl ExportFormat {
    /// The answer's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Json => "application/json",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Writes an export row by row, counting bytes against a cap.
pub struct Writer {
    format: ExportFormat,
    max_bytes: u64,
    written: u64,
    count: u64,
    truncated: bool,
}

impl Writer {
    /// A writer that stops adding rows once `max_bytes` would be exceeded.
    pub fn new(format: ExportFormat, max_bytes: u64) -> Writer {
        Writer { format, max_bytes, written: 0, count: 0, truncated: false }
    }

    fn put(&mut self, out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
        self.written += bytes.len() as u64;
        out.write_all(bytes)
    }

    /// The header (CSV) or opening (JSON).
    pub fn start(&mut self, out: &mut impl Write) -> io::Result<()> {
        match self.format {
            ExportFormat::Csv => self.put(out, csv_line(&CSV_COLUMNS).as_bytes()),
            ExportFormat::Json => self.put(out, b"{\"logs\":["),
        }
    }

    /// Add a row (its `id` is replaced by its position); false once the cap is reached.
    pub fn row(&mut self, out: &mut impl Write, row: &LogRow) -> io::Result<bool> {
        let mut row = row.clone();
        row.id = self.count + 1;
        let bytes = match self.format {
            ExportFormat::Csv => csv_row(&row).into_bytes(),
            ExportFormat::Json => {
                let mut bytes = if self.count > 0 { vec![b','] } else { Vec::new() };
                serde_json::to_writer(&mut bytes, &row).map_err(io::Error::other)?;
                bytes
            }
        };
        if self.written + bytes.len() as u64 > self.max_bytes {
            self.truncated = true;
            return Ok(false);
        }
        self.put(out, &bytes)?;
        self.count += 1;
        Ok(true)
    }

    /// The totals: rows written, whether the cap cut the export, rows skipped as tampered.
    pub fn finish(&mut self, out: &mut impl Write, skipped_tampered: u64) -> io::Result<()> {
        match self.format {
            ExportFormat::Json => {
                let tail = format!(
                    "],\"count\":{},\"truncated\":{},\"skipped_tampered\":{skipped_tampered}}}",
                    self.count, self.truncated
                );
                self.put(out, tail.as_bytes())
            }
            ExportFormat::Csv => {
                if self.truncated {
                    let line = format!(
                        "# truncated: the export stopped at {} bytes; filter by machine_id or widget_type\r\n",
                        self.max_bytes
                    );
                    self.put(out, line.as_bytes())?;
                }
                if skipped_tampered > 0 {
                    let line =
                        format!("# skipped {skipped_tampered} tampered rows (run `fleet-agent receive verify`)\r\n");
                    self.put(out, line.as_bytes())?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(message: &str) -> LogRow {
        LogRow {
            id: 1,
            machine_id: "m1".into(),
            timestamp: "2026-11-22T13:00:00".into(),
            level: "info".into(),
            widget_type: "ping".into(),
            message: message.into(),
            data: json!({"latency": 1.5, "target": "x"}),
        }
    }

    #[test]
    fn quoting_follows_rfc_4180() {
        assert_eq!(csv_field("plain"), "\"plain\"");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(
            csv_row(&row("a, \"b\"\nc")),
            "\"1\",\"m1\",\"2026-11-22T13:00:00\",\"info\",\"ping\",\"a, \"\"b\"\"\nc\",\"{\"\"latency\"\":1.5,\"\"target\"\":\"\"x\"\"}\"\r\n"
        );
    }

    #[test]
    fn formula_starts_are_neutralised_owasp() {
        for (cell, expected) in [
            ("=1+1", "\"'=1+1\""),
            ("+1", "\"'+1\""),
            ("-2", "\"'-2\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("\tx", "\"'\tx\""),
            ("\rx", "\"'\rx\""),
            ("=HYPERLINK(\"http://e\")", "\"'=HYPERLINK(\"\"http://e\"\")\""),
            ("a=1", "\"a=1\""),
        ] {
            assert_eq!(csv_field(cell), expected, "{cell:?}");
        }
    }

    #[test]
    fn writer_stops_at_the_byte_cap_and_says_so() {
        let mut out = Vec::new();
        let mut writer = Writer::new(ExportFormat::Json, 200);
        writer.start(&mut out).expect("start");
        let mut rows = 0;
        while writer.row(&mut out, &row("x")).expect("row") {
            rows += 1;
        }
        writer.finish(&mut out, 2).expect("finish");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(value["count"], rows);
        assert_eq!(value["truncated"], true);
        assert_eq!(value["skipped_tampered"], 2);
        assert!(out.len() < 200 + 80, "{} bytes", out.len());
    }
}
