//! Courses: create, find by code, list, end early.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, params};
use serde_json::json;

use super::accounting;
use super::audit::ended;
use super::consents::end_consents;
use super::{EndReason, EventKind};
use super::{Store, StoreError, insert_event, parse_ts, ts};
use crate::clients::{AccessCode, Course, MacAddr};

const COLUMNS: &str = "id, title, code, starts_at, ends_at, max_devices, ended_early_at";

/// A course row as stored: id, title, code, starts, ends, max devices, ended early.
type RawCourse = (i64, String, String, String, String, u32, Option<String>);

fn course_from_row(r: &Row<'_>) -> rusqlite::Result<RawCourse> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn course(raw: RawCourse) -> Result<Course, StoreError> {
    let (id, title, code, starts, ends, max_devices, ended) = raw;
    Ok(Course {
        id,
        title,
        code: AccessCode::normalise(&code).ok_or_else(|| StoreError::Corrupt(format!("course {id} code")))?,
        starts_at: parse_ts(&starts)?,
        ends_at: parse_ts(&ends)?,
        max_devices,
        ended_early_at: ended.as_deref().map(parse_ts).transpose()?,
    })
}

/// The course whose code is `code`, read on `conn` (inside the caller's transaction).
pub(super) fn course_by_code_in(conn: &rusqlite::Connection, code: &AccessCode) -> Result<Option<Course>, StoreError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM courses WHERE code = ?1"))?
        .query_row([code.as_str()], course_from_row)
        .optional()?;
    raw.map(course).transpose()
}

impl Store {
    /// Creates a course with a fresh code from `new_code` (retried if it collides with any code
    /// ever issued, so an old code can never open a new course).
    ///
    /// # Errors
    /// On a database failure, or if 20 codes in a row collided.
    // Each argument is a distinct course field, the clock or the acting account; a struct would
    // only rename them at every call.
    #[allow(clippy::too_many_arguments)]
    pub fn add_course(
        &self,
        title: &str,
        starts_at: Timestamp,
        ends_at: Timestamp,
        max_devices: u32,
        now: Timestamp,
        by: &str,
        mut new_code: impl FnMut() -> AccessCode,
    ) -> Result<Course, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for _ in 0..20 {
            let code = new_code();
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM courses WHERE code = ?1)",
                [code.as_str()],
                |r| r.get(0),
            )?;
            if taken {
                continue;
            }
            tx.execute(
                "INSERT INTO courses (title, code, starts_at, ends_at, max_devices, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![title, code.as_str(), ts(starts_at), ts(ends_at), max_devices, ts(now)],
            )?;
            let id = tx.last_insert_rowid();
            insert_event(
                &tx,
                now,
                EventKind::CourseAdded,
                &json!({"course": id, "title": title, "by": by, "starts_at": ts(starts_at), "ends_at": ts(ends_at), "max_devices": max_devices}),
            )?;
            tx.commit()?;
            return Ok(Course {
                id,
                title: title.to_owned(),
                code,
                starts_at,
                ends_at,
                max_devices,
                ended_early_at: None,
            });
        }
        Err(StoreError::Corrupt(
            "20 access codes in a row were already taken".into(),
        ))
    }

    /// All courses, newest start first.
    ///
    /// # Errors
    /// On a database failure.
    pub fn courses(&self) -> Result<Vec<Course>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM courses ORDER BY starts_at DESC, id DESC"
        ))?;
        let rows = stmt.query_map([], course_from_row)?;
        rows.map(|r| course(r?)).collect()
    }

    /// The course with this code, whatever its state.
    ///
    /// # Errors
    /// On a database failure.
    pub fn course_by_code(&self, code: &AccessCode) -> Result<Option<Course>, StoreError> {
        course_by_code_in(&self.lock(), code)
    }

    /// Ends a course now: no more acceptances, and every open consent for it ends. Returns the
    /// course and the MACs whose consents were ended (the caller closes them in the firewall).
    ///
    /// # Errors
    /// `NotFound` for an unknown id; a database failure.
    pub fn end_course(&self, id: i64, now: Timestamp, by: &str) -> Result<(Course, Vec<MacAddr>), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let raw = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM courses WHERE id = ?1"),
                [id],
                course_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("course {id}")))?;
        let mut found = course(raw)?;
        if found.ended_early_at.is_none() && found.ends_at > now {
            tx.execute(
                "UPDATE courses SET ended_early_at = ?2 WHERE id = ?1",
                params![id, ts(now)],
            )?;
            found.ended_early_at = Some(now);
        }
        const REASON: &str = EndReason::CourseEnded.as_str();
        let (ids, macs) = end_consents(
            &tx,
            "UPDATE consents SET ended_at = ?2, end_reason = ?3, ended_by = ?4
             WHERE course_id = ?1 AND ended_at IS NULL AND expires_at > ?2 RETURNING id, mac",
            params![id, ts(now), REASON, by],
        )?;
        insert_event(
            &tx,
            now,
            EventKind::CourseEnded,
            &json!({"course": id, "devices_closed": macs.len(), "by": by, "ended": ended(&ids, &[], REASON, Some(by))}),
        )?;
        for &mac in &macs {
            let closed = accounting::Change::Closed(accounting::StopCause::AdminReset);
            accounting::account(&tx, self.acct(), mac, now, closed)?;
        }
        tx.commit()?;
        Ok((found, macs))
    }
}
