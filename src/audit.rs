//! Audit exports: one row per consent, for a date range and optionally one course or device, as
//! CSV that opens correctly in Excel and LibreOffice (UTF-8 with BOM, RFC 4180 quoting, CRLF,
//! and no cell a spreadsheet would run as a formula) or as JSON Lines. Reads only.

use std::io::Write;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::store::ConsentRecord;

/// Export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CSV for spreadsheets.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// Its name, as the file extension and in the export's record: `csv` or `jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
        }
    }
}

/// One exported consent.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// When the guest accepted, school time.
    pub accepted_local: String,
    /// The same, UTC (RFC 3339 with milliseconds, always the same width).
    pub accepted_utc: String,
    /// Device.
    pub mac: String,
    /// Its address.
    pub ip: String,
    /// Name given.
    pub name: String,
    /// Organisation given.
    pub organisation: String,
    /// Course id.
    pub course_id: i64,
    /// Course title.
    pub course: String,
    /// SHA-256 of the policy text accepted.
    pub policy_version: String,
    /// When access ended (or ends), school time.
    pub session_end_local: String,
    /// The same, UTC.
    pub session_end_utc: String,
    /// expired, open, revoked by X, course ended early by X, or another reason.
    pub ended_how: String,
    /// The browser's User-Agent.
    pub user_agent: String,
    /// When the personal fields were erased, school time (empty if they are held).
    pub erased_local: String,
}

impl Row {
    /// Builds the row for `r`, as of `now`.
    pub fn new(r: &ConsentRecord, tz: &TimeZone, now: Timestamp) -> Self {
        let local = |t: Timestamp| t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S").to_string();
        let end = r.ended_at.unwrap_or(r.expires_at);
        let by = r.ended_by.as_deref().unwrap_or("unknown");
        let ended_how = match (&r.ended_at, r.end_reason.as_deref()) {
            (Some(_), Some("revoked")) => format!("revoked by {by}"),
            (Some(_), Some("course ended")) => format!("course ended early by {by}"),
            (Some(_), Some(reason)) => reason.to_owned(),
            (Some(_), None) => "ended".to_owned(),
            (None, _) if r.expires_at <= now => "expired".to_owned(),
            (None, _) => "open".to_owned(),
        };
        Self {
            accepted_local: local(r.accepted_at),
            accepted_utc: crate::store::ts(r.accepted_at),
            mac: r.mac.map(|m| m.to_string()).unwrap_or_default(),
            ip: r.ip.clone(),
            name: r.name.clone(),
            organisation: r.organisation.clone(),
            course_id: r.course_id,
            course: r.course.clone(),
            policy_version: r.policy_hash.clone(),
            session_end_local: local(end),
            session_end_utc: crate::store::ts(end),
            ended_how,
            user_agent: r.user_agent.clone(),
            erased_local: r.erased_at.map(local).unwrap_or_default(),
        }
    }
}

/// A text cell that a spreadsheet will show as text: one starting with `=`, `+`, `-`, `@`, a
/// tab or a carriage return would be run as a formula, so it gets a leading apostrophe (the
/// OWASP advice for CSV injection). Only for CSV; JSON keeps the exact value.
pub fn spreadsheet_safe(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_owned(),
    }
}

/// Writes `rows` to `out` in `format`.
///
/// # Errors
/// If writing fails.
pub fn write(rows: &[Row], format: Format, out: &mut dyn Write) -> std::io::Result<()> {
    match format {
        Format::Jsonl => {
            for row in rows {
                serde_json::to_writer(&mut *out, row)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        Format::Csv => {
            // The BOM tells Excel the file is UTF-8 (names like Zoë otherwise come out garbled).
            out.write_all("\u{FEFF}".as_bytes())?;
            let mut w = csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(out);
            w.write_record([
                "accepted_local",
                "accepted_utc",
                "mac",
                "ip",
                "name",
                "organisation",
                "course_id",
                "course",
                "policy_version",
                "session_end_local",
                "session_end_utc",
                "ended_how",
                "user_agent",
                "erased_local",
            ])?;
            for r in rows {
                w.write_record([
                    r.accepted_local.clone(),
                    r.accepted_utc.clone(),
                    r.mac.clone(),
                    r.ip.clone(),
                    spreadsheet_safe(&r.name),
                    spreadsheet_safe(&r.organisation),
                    r.course_id.to_string(),
                    spreadsheet_safe(&r.course),
                    r.policy_version.clone(),
                    r.session_end_local.clone(),
                    r.session_end_utc.clone(),
                    spreadsheet_safe(&r.ended_how),
                    spreadsheet_safe(&r.user_agent),
                    r.erased_local.clone(),
                ])?;
            }
            w.flush()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_have_a_fixed_width() {
        let r = ConsentRecord {
            id: 1,
            accepted_at: "2026-11-22T15:04:05.12Z".parse().unwrap(),
            mac: Some("02:00:00:00:00:01".parse().unwrap()),
            ip: "192.0.2.1".into(),
            name: "n".into(),
            organisation: "o".into(),
            user_agent: "u".into(),
            course_id: 1,
            course: "c".into(),
            policy_hash: "p".into(),
            expires_at: "2026-11-22T16:00:00Z".parse().unwrap(),
            ended_at: None,
            end_reason: None,
            ended_by: None,
            erased_at: None,
        };
        let row = Row::new(&r, &TimeZone::UTC, "2026-11-22T15:30:00Z".parse().unwrap());
        assert_eq!(row.accepted_utc, "2026-11-22T15:04:05.120Z");
        assert_eq!(row.session_end_utc, "2026-11-22T16:00:00.000Z");
        assert_eq!(row.ended_how, "open");
    }

    #[test]
    fn formulas_become_text_only_in_csv_cells() {
        assert_eq!(
            spreadsheet_safe("=HYPERLINK(\"http://x\",\"y\")"),
            "'=HYPERLINK(\"http://x\",\"y\")"
        );
        for f in ["+1", "-1+1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(spreadsheet_safe(f).starts_with('\''), "{f:?}");
        }
        assert_eq!(spreadsheet_safe("Ann"), "Ann");
        assert_eq!(spreadsheet_safe(""), "");
    }
}
