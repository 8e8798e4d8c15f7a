//! Target `csv`: `audit::write`, the consent export, with guest-typed text (name, organisation,
//! course, how it ended, user agent) taken from the input, `\x1f` between fields. Read back with
//! the `csv` crate, every cell equals what was written, except that free text starting with
//! `=`, `+`, `-`, `@`, a tab or a CR carries the documented leading `'`; no cell starts with
//! one of those unescaped. The JSON Lines export keeps the exact text.

use aupgate::audit::{self, Format, Row};

use crate::driver::Target;

/// The columns holding guest-typed text, which get the formula guard.
const FREE_TEXT: [usize; 5] = [4, 5, 7, 11, 12];
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

pub(crate) struct CsvExport;

impl Target for CsvExport {
    fn name(&self) -> &'static str {
        "csv"
    }

    fn tokens(&self) -> &'static [&'static str] {
        &[
            "=HYPERLINK(\"http://x\",\"y\")",
            "=1+1",
            "+",
            "-",
            "@SUM(A1)",
            "\"\"",
            "\r\n",
            "'",
            "\u{1F}=",
            "＝",
            "|",
        ]
    }

    fn check(&mut self, input: &[u8]) -> Result<u64, String> {
        let text = String::from_utf8_lossy(input);
        let mut parts: Vec<&str> = text.split('\u{1F}').collect();
        if parts.len() == 1 {
            parts = vec![&*text; 5];
        }
        parts.resize(5, "");
        let first = row([parts[0], parts[1], parts[2], parts[3], parts[4]]);
        let second = row([parts[4], parts[3], parts[2], parts[1], parts[0]]);
        let rows = [first, second];
        csv_round_trip(&rows)?;
        jsonl_round_trip(&rows)?;
        let guarded = parts.iter().any(|p| p.starts_with(FORMULA_START));
        let quoted = parts.iter().any(|p| p.contains(['"', ',', '\r', '\n']));
        Ok(u64::from(guarded) + 2 * u64::from(quoted))
    }
}

fn row(free: [&str; 5]) -> Row {
    Row {
        accepted_local: "2026-11-23 10:00:00".into(),
        accepted_utc: "2026-11-23T10:00:00.000Z".into(),
        mac: "02:00:00:00:00:10".into(),
        ip: "192.0.2.10".into(),
        name: free[0].into(),
        organisation: free[1].into(),
        course_id: 7,
        course: free[2].into(),
        policy_version: "ab".repeat(32),
        session_end_local: "2026-11-23 16:00:00".into(),
        session_end_utc: "2026-11-23T16:00:00.000Z".into(),
        ended_how: free[3].into(),
        user_agent: free[4].into(),
        erased_local: String::new(),
    }
}

/// Every cell of `r` as written, in export order.
fn cells(r: &Row) -> [String; 14] {
    [
        r.accepted_local.clone(),
        r.accepted_utc.clone(),
        r.mac.clone(),
        r.ip.clone(),
        r.name.clone(),
        r.organisation.clone(),
        r.course_id.to_string(),
        r.course.clone(),
        r.policy_version.clone(),
        r.session_end_local.clone(),
        r.session_end_utc.clone(),
        r.ended_how.clone(),
        r.user_agent.clone(),
        r.erased_local.clone(),
    ]
}

fn csv_round_trip(rows: &[Row]) -> Result<(), String> {
    let mut out = Vec::new();
    audit::write(rows, Format::Csv, &mut out).map_err(|e| format!("CSV export failed: {e}"))?;
    let body = out
        .strip_prefix("\u{FEFF}".as_bytes())
        .ok_or("the CSV export does not start with the UTF-8 BOM")?;
    let mut reader = ::csv::ReaderBuilder::new().has_headers(false).from_reader(body);
    let records: Vec<::csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the export does not read back as CSV: {e}"))?;
    if records.len() != rows.len() + 1 || records[0].get(0) != Some("accepted_local") || records[0].len() != 14 {
        return Err(format!(
            "{} records (with a 14-name header) expected, read {records:?}",
            rows.len() + 1
        ));
    }
    for (record, r) in records[1..].iter().zip(rows) {
        if record.len() != 14 {
            return Err(format!("a row read back with {} cells: {record:?}", record.len()));
        }
        for (col, (read, written)) in record.iter().zip(cells(r)).enumerate() {
            let guarded = FREE_TEXT.contains(&col) && written.starts_with(FORMULA_START);
            let expected = if guarded {
                format!("'{written}")
            } else {
                written.clone()
            };
            if read != expected {
                return Err(format!("column {col}: wrote {written:?}, read back {read:?}"));
            }
        }
    }
    for record in &records {
        if let Some(cell) = record.iter().find(|c| c.starts_with(FORMULA_START)) {
            return Err(format!("a cell a spreadsheet would run as a formula: {cell:?}"));
        }
    }
    Ok(())
}

fn jsonl_round_trip(rows: &[Row]) -> Result<(), String> {
    let mut out = Vec::new();
    audit::write(rows, Format::Jsonl, &mut out).map_err(|e| format!("JSONL export failed: {e}"))?;
    let text = String::from_utf8(out).map_err(|e| format!("JSONL export is not UTF-8: {e}"))?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != rows.len() {
        return Err(format!("{} rows became {} JSON lines", rows.len(), lines.len()));
    }
    for (line, r) in lines.iter().zip(rows) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("a JSON line does not parse: {e}"))?;
        let fields = [
            ("name", &r.name),
            ("organisation", &r.organisation),
            ("course", &r.course),
            ("ended_how", &r.ended_how),
            ("user_agent", &r.user_agent),
        ];
        for (key, written) in fields {
            if v[key].as_str() != Some(written.as_str()) {
                return Err(format!("JSON {key}: wrote {written:?}, read back {}", v[key]));
            }
        }
    }
    Ok(())
}
