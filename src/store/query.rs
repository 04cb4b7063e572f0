//! Listing the message log: filters, a total, and keyset pagination (newest first).

use super::sql::{Sql, like_escape};
use super::{COLUMNS, Status, Store, StoreError, StoredMessage, db};
use sqlx::Row;

/// Filters for [`Store::list`]. Every field is optional; all given ones must match.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// MSH-3 or MSH-4 key equal to this (`namespace^universal^type`).
    pub sender: Option<String>,
    /// `ADT^A01`, or a message code alone (`ADT`) for every trigger.
    pub message_type: Option<String>,
    /// Where it came in: `mllp`, `http`, `fhir`, `file`.
    pub source: Option<String>,
    /// Its forwarding state at some destination: `pending`, `sent`, `dead`.
    pub forward: Option<String>,
    /// Received at or after (µs since the epoch).
    pub since: Option<i64>,
    /// Received before (µs since the epoch).
    pub until: Option<i64>,
    /// Cursor: only ids below this one.
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: u32,
}

/// One page of the log.
#[derive(Debug, Clone)]
pub struct MessagePage {
    /// Messages matching the filter (cursor excluded).
    pub total: i64,
    /// This page, newest first.
    pub items: Vec<StoredMessage>,
    /// Cursor for the next page, when there is one.
    pub next_before: Option<i64>,
}

/// ` WHERE a AND b`, or nothing.
fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

impl Store {
    /// A page of the message log, newest first, with the number of all matching messages.
    pub async fn list(&self, f: &MessageFilter) -> Result<MessagePage, StoreError> {
        let mut sql = Sql::default();
        let mut conds: Vec<String> = Vec::new();
        if let Some(st) = f.status {
            conds.push(format!("status = {}", sql.text(st.as_str())));
        }
        if let Some(sender) = &f.sender {
            let p = sql.text(sender);
            conds.push(format!(
                "(sending_application = {p} OR sending_facility = {p})"
            ));
        }
        if let Some(t) = &f.message_type {
            if t.contains('^') {
                conds.push(format!("message_type = {}", sql.text(t)));
            } else {
                // `ADT` matches `ADT^…`; LIKE metacharacters in the value are escaped.
                let p = sql.text(&format!("{}^%", like_escape(t)));
                conds.push(format!("message_type LIKE {p} ESCAPE '\\'"));
            }
        }
        if let Some(s) = &f.source {
            conds.push(format!("source = {}", sql.text(s)));
        }
        if let Some(s) = &f.forward {
            conds.push(format!(
                "EXISTS (SELECT 1 FROM forward_queue q WHERE q.message_id = messages.id \
                 AND q.state = {})",
                sql.text(s)
            ));
        }
        if let Some(t) = f.since {
            conds.push(format!("received_at >= {}", sql.int(t)));
        }
        if let Some(t) = f.until {
            conds.push(format!("received_at < {}", sql.int(t)));
        }
        sql.text = format!("SELECT COUNT(*) FROM messages{}", where_clause(&conds));
        let total: i64 = sql
            .query()
            .fetch_one(self.pool())
            .await
            .map_err(db("count matching messages"))?
            .try_get(0)
            .map_err(db("decode the count"))?;

        if let Some(b) = f.before_id {
            conds.push(format!("id < {}", sql.int(b)));
        }
        let page_where = where_clause(&conds);
        let limit = f.limit.clamp(1, 1000) as i64;
        let query = format!(
            "SELECT {COLUMNS} FROM messages{page_where} ORDER BY id DESC LIMIT {}",
            limit + 1
        );
        sql.text = query;
        let rows = sql
            .query()
            .fetch_all(self.pool())
            .await
            .map_err(db("list messages"))?;
        let mut items = rows
            .iter()
            .map(StoredMessage::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("decode messages"))?;
        let next_before = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|m| m.id)
        } else {
            None
        };
        Ok(MessagePage {
            total,
            items,
            next_before,
        })
    }
}
