//! Listing the message log: filters, a total, and keyset pagination (newest first).

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

enum Arg {
    Text(String),
    Int(i64),
}

/// ` WHERE a AND b`, or nothing.
fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// A query with every argument bound, in order.
fn bound(
    sql: String,
    args: &[Arg],
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s.clone()),
            Arg::Int(i) => q.bind(*i),
        };
    }
    q
}

impl Store {
    /// A page of the message log, newest first, with the number of all matching messages.
    pub async fn list(&self, f: &MessageFilter) -> Result<MessagePage, StoreError> {
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Arg> = Vec::new();
        fn push(
            conds: &mut Vec<String>,
            cond: &dyn Fn(usize) -> String,
            a: Arg,
            args: &mut Vec<Arg>,
        ) {
            args.push(a);
            conds.push(cond(args.len()));
        }
        if let Some(s) = f.status {
            push(
                &mut conds,
                &|n| format!("status = ${n}"),
                Arg::Text(s.as_str().into()),
                &mut args,
            );
        }
        if let Some(s) = &f.sender {
            push(
                &mut conds,
                &|n| format!("(sending_application = ${n} OR sending_facility = ${n})"),
                Arg::Text(s.clone()),
                &mut args,
            );
        }
        if let Some(t) = &f.message_type {
            if t.contains('^') {
                push(
                    &mut conds,
                    &|n| format!("message_type = ${n}"),
                    Arg::Text(t.clone()),
                    &mut args,
                );
            } else {
                // `ADT` matches `ADT^…`; LIKE metacharacters in the value are escaped.
                let esc = t
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                push(
                    &mut conds,
                    &|n| format!("message_type LIKE ${n} ESCAPE '\\'"),
                    Arg::Text(format!("{esc}^%")),
                    &mut args,
                );
            }
        }
        if let Some(t) = f.since {
            push(
                &mut conds,
                &|n| format!("received_at >= ${n}"),
                Arg::Int(t),
                &mut args,
            );
        }
        if let Some(t) = f.until {
            push(
                &mut conds,
                &|n| format!("received_at < ${n}"),
                Arg::Int(t),
                &mut args,
            );
        }
        let count_sql = format!("SELECT COUNT(*) FROM messages{}", where_clause(&conds));
        let total: i64 = bound(count_sql, &args)
            .fetch_one(self.pool())
            .await
            .map_err(db("count matching messages"))?
            .try_get(0)
            .map_err(db("decode the count"))?;

        if let Some(b) = f.before_id {
            push(
                &mut conds,
                &|n| format!("id < ${n}"),
                Arg::Int(b),
                &mut args,
            );
        }
        let page_where = where_clause(&conds);
        let limit = f.limit.clamp(1, 1000) as i64;
        let sql = format!(
            "SELECT {COLUMNS} FROM messages{page_where} ORDER BY id DESC LIMIT {}",
            limit + 1
        );
        let rows = bound(sql, &args)
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
