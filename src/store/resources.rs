//! The FHIR resource store: versioned resources (PUT by id), written in the transaction of the
//! message that produced them, with their search index rows; reads, history, search and
//! `$everything` for the `/fhir` facade.
//!
//! Tables (`sqlite_2.sql`, `postgres_2.sql`): `resources` holds one row per `Type/id` (its current
//! version, hash and a stable integer key `rid`); `resource_versions` every version's JSON;
//! `idx_token`, `idx_string`, `idx_date`, `idx_ref`, `idx_quantity` the search index of the
//! current version. The stored JSON carries neither `meta.versionId` nor `meta.lastUpdated`:
//! they are columns, put into the resource when it is read.

use super::exec::Cols;
use super::sql::{Arg, Sql, like_escape, placeholders, placeholders_from, values_list};
use super::{Store, StoreError, db};
use crate::fhir::search::IndexRows;
use crate::fhir::search::query::{Cond, Include, Prefix, SearchQuery, StrMode};
use sqlx::Row;
use std::collections::{HashMap, HashSet};

/// A resource produced by a conversion, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewResource {
    /// `Patient`.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// The resource JSON.
    pub content: String,
    /// SHA-256 of `content`, hex: an unchanged resource makes no new version.
    pub hash: String,
    /// A delete (from a transaction entry `DELETE Type/id`).
    pub deleted: bool,
    /// Search index rows.
    pub index: IndexRows,
    /// A versioned write (`request.ifMatch`): the version the resource must be at when this is
    /// committed, else the whole request is refused (412) and nothing of it is written.
    pub if_match: Option<i64>,
}

impl NewResource {
    /// From a resource in a Bundle entry. `None` without `resourceType` or `id`.
    pub fn from_json(resource: &serde_json::Value) -> Option<NewResource> {
        let resource_type = resource.get("resourceType")?.as_str()?.to_string();
        let id = resource.get("id")?.as_str()?.to_string();
        let content = crate::fhir::json::to_string(resource);
        let hash = crate::ingest::content_hash(content.as_bytes());
        Some(NewResource {
            resource_type,
            id,
            index: crate::fhir::search::index(resource),
            content,
            hash,
            deleted: false,
            if_match: None,
        })
    }

    /// A delete of `Type/id`.
    pub fn delete(resource_type: &str, id: &str) -> NewResource {
        NewResource {
            resource_type: resource_type.into(),
            id: id.into(),
            content: String::new(),
            hash: String::new(),
            deleted: true,
            index: IndexRows::default(),
            if_match: None,
        }
    }

    /// The Bundle as compact JSON text, and the resources of its entries (deletes from
    /// `request.method = DELETE`): each resource is serialized once and its text spliced into the
    /// Bundle's (the same bytes as `serde_json::to_string(bundle)`, for half the serializing).
    pub fn from_bundle(bundle: &serde_json::Value) -> (String, Vec<NewResource>) {
        let found = Self::entries(bundle);
        let text =
            bundle_text(bundle, &found).unwrap_or_else(|| crate::fhir::json::to_string(bundle));
        (text, found.into_iter().map(|(_, r)| r).collect())
    }

    /// `(entry index, resource)` for every entry that yields one.
    fn entries(bundle: &serde_json::Value) -> Vec<(usize, NewResource)> {
        let Some(entries) = bundle.get("entry").and_then(|e| e.as_array()) else {
            return Vec::new();
        };
        entries
            .iter()
            .enumerate()
            .filter_map(|(n, e)| {
                let req = e.get("request");
                let found = if req.and_then(|r| r.get("method")).and_then(|m| m.as_str())
                    == Some("DELETE")
                {
                    req.and_then(|r| r.get("url"))
                        .and_then(|u| u.as_str())
                        .and_then(|u| u.split_once('/'))
                        .map(|(ty, id)| NewResource::delete(ty, id))
                } else {
                    e.get("resource").and_then(NewResource::from_json)
                };
                let found = found.map(|mut r| {
                    r.if_match = req
                        .and_then(|r| r.get("ifMatch"))
                        .and_then(|v| v.as_str())
                        .and_then(crate::fhir::intake::parse_if_match);
                    r
                });
                if found.is_none() {
                    // The converter always sets both; say so rather than drop it unnoticed.
                    tracing::warn!(
                        entry = n,
                        "Bundle.entry[{n}] has no resource with resourceType and id (or DELETE request.url Type/id); not stored in the FHIR store"
                    );
                }
                found.map(|r| (n, r))
            })
            .collect()
    }
}

/// Compact JSON of `bundle` with the `entry[n].resource` of each `found` written from its stored
/// text. `None` if the Bundle is not an object (the caller serializes it whole).
fn bundle_text(bundle: &serde_json::Value, found: &[(usize, NewResource)]) -> Option<String> {
    let content: HashMap<usize, &str> = found
        .iter()
        .filter(|(_, r)| !r.deleted)
        .map(|(n, r)| (*n, r.content.as_str()))
        .collect();
    let mut out: Vec<u8> = Vec::with_capacity(content.values().map(|c| c.len() + 200).sum());
    write_object(&mut out, bundle.as_object()?, |out, k, v| {
        let ("entry", Some(entries)) = (k, v.as_array()) else {
            return Some(false);
        };
        out.push(b'[');
        for (n, e) in entries.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            match (e.as_object(), content.get(&n)) {
                (Some(entry), Some(text)) => write_object(out, entry, |out, k2, _| {
                    let resource = k2 == "resource";
                    if resource {
                        out.extend_from_slice(text.as_bytes());
                    }
                    Some(resource)
                })?,
                _ => crate::fhir::json::write_value(out, e),
            }
        }
        out.push(b']');
        Some(true)
    })?;
    String::from_utf8(out).ok()
}

/// Compact JSON of `obj`; `special` writes a member's value itself (`Some(true)`) or leaves it
/// to serde_json (`Some(false)`). `None` when writing failed.
fn write_object(
    out: &mut Vec<u8>,
    obj: &serde_json::Map<String, serde_json::Value>,
    mut special: impl FnMut(&mut Vec<u8>, &str, &serde_json::Value) -> Option<bool>,
) -> Option<()> {
    out.push(b'{');
    for (i, (k, v)) in obj.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::fhir::json::write_str(out, k);
        out.push(b':');
        if !special(out, k, v)? {
            crate::fhir::json::write_value(out, v);
        }
    }
    out.push(b'}');
    Some(())
}

/// One stored resource version.
#[derive(Debug, Clone)]
pub struct ResourceRow {
    /// Stable integer key of the resource.
    pub rid: i64,
    /// Type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// Version (1, 2, …).
    pub version: i64,
    /// µs since the epoch.
    pub last_updated: i64,
    /// This version is a delete.
    pub deleted: bool,
    /// JSON without `meta.versionId`/`meta.lastUpdated` (empty for deletes).
    pub content: String,
    /// The message that produced this version.
    pub message_id: Option<i64>,
}

impl ResourceRow {
    /// The resource with `meta.versionId` and `meta.lastUpdated` set.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&self.content).unwrap_or_else(|_| serde_json::json!({}));
        if let Some(obj) = v.as_object_mut() {
            let meta = obj.entry("meta").or_insert_with(|| serde_json::json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.insert("versionId".into(), self.version.to_string().into());
                m.insert(
                    "lastUpdated".into(),
                    crate::fhir::datetime::instant_from_micros(self.last_updated).into(),
                );
            }
        }
        v
    }
}

/// A page of search results.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    /// All matches (not only this page); `None` when not counted.
    pub total: Option<i64>,
    /// This page's matches, in order.
    pub matches: Vec<ResourceRow>,
    /// Resources added by `_include` / `_revinclude`.
    pub included: Vec<ResourceRow>,
    /// Position to continue after (`_page`), when there are more.
    pub next: Option<(i64, i64)>,
}

/// A page of history, newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// Versions (deletes included).
    pub versions: Vec<ResourceRow>,
    /// All versions matching (not only this page).
    pub total: i64,
    /// `(last_updated, rid, version)` of the last entry, when there are more.
    pub next: Option<(i64, i64, i64)>,
}

/// Rows per multi-row statement (at most 6 columns: far under both databases' limits).
const CHUNK: usize = 500;

const ROW_COLS: &str =
    "r.rid, r.type, r.id, v.version, v.last_updated, v.deleted, v.content, v.message_id";

/// [`ROW_COLS`] of a row, from either executor.
fn resource_row(r: &dyn Cols) -> Result<ResourceRow, StoreError> {
    Ok(ResourceRow {
        rid: r.int(0)?,
        resource_type: r.text(1)?,
        id: r.text(2)?,
        version: r.int(3)?,
        last_updated: r.int(4)?,
        deleted: r.int(5)? != 0,
        content: r.text(6)?,
        message_id: r.opt_int(7)?,
    })
}

/// Write the resources of committed messages, in order: a new version for each resource whose
/// content changed (or that is new), its index rows replaced. Runs inside the caller's
/// transaction.
pub(crate) async fn apply<E: super::exec::Exec>(
    conn: &mut E,
    items: &[(i64, &NewResource)],
    now: i64,
) -> Result<(), StoreError> {
    use super::exec::Cols;
    if items.is_empty() {
        return Ok(());
    }
    // 1. Current state of every resource named.
    struct State {
        rid: Option<i64>,
        version: i64,
        hash: String,
        deleted: bool,
        changed: bool,
        index: Option<usize>,
    }
    let mut state: HashMap<(String, String), State> = HashMap::new();
    let ids: Vec<&str> = {
        let mut seen = HashSet::new();
        items
            .iter()
            .map(|(_, r)| r.id.as_str())
            .filter(|id| seen.insert(*id))
            .collect()
    };
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT rid, type, id, version, hash, deleted FROM resources WHERE id IN ({})",
            placeholders(chunk.len())
        );
        let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text(id.to_string())).collect();
        for r in conn.fetch("look up resources", &sql, &args).await? {
            state.insert(
                (r.text(1)?, r.text(2)?),
                State {
                    rid: Some(r.int(0)?),
                    version: r.int(3)?,
                    hash: r.text(4)?,
                    deleted: r.int(5)? != 0,
                    changed: false,
                    index: None,
                },
            );
        }
    }
    // 2. Decide versions in order.
    let mut versions: Vec<((String, String), i64, usize, i64)> = Vec::new(); // key, version, item, message
    for (i, (message_id, r)) in items.iter().enumerate() {
        let key = (r.resource_type.clone(), r.id.clone());
        let s = state.entry(key.clone()).or_insert(State {
            rid: None,
            version: 0,
            hash: String::new(),
            deleted: true,
            changed: false,
            index: None,
        });
        if s.deleted == r.deleted && (r.deleted || s.hash == r.hash) {
            continue; // unchanged (or deleting what is not there)
        }
        s.version += 1;
        s.hash = r.hash.clone();
        s.deleted = r.deleted;
        s.changed = true;
        s.index = Some(i);
        versions.push((key, s.version, i, *message_id));
    }
    if versions.is_empty() {
        return Ok(());
    }
    // 3. Upsert the current rows, learning the rid of new ones.
    let changed: Vec<(&(String, String), &State)> =
        state.iter().filter(|(_, s)| s.changed).collect();
    let mut rids: HashMap<(String, String), i64> = HashMap::new();
    for chunk in changed.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO resources (type, id, version, last_updated, hash, deleted) VALUES {} \
             ON CONFLICT (id, type) DO UPDATE SET version = excluded.version, \
             last_updated = excluded.last_updated, hash = excluded.hash, deleted = excluded.deleted \
             RETURNING rid, type, id",
            values_list(chunk.len(), 6)
        );
        let mut args = Vec::with_capacity(chunk.len() * 6);
        for ((ty, id), s) in chunk {
            args.extend([
                Arg::Text(ty.clone()),
                Arg::Text(id.clone()),
                Arg::Int(s.version),
                Arg::Int(now),
                Arg::Text(s.hash.clone()),
                Arg::Int(s.deleted as i64),
            ]);
        }
        for r in conn.fetch("write resources", &sql, &args).await? {
            rids.insert((r.text(1)?, r.text(2)?), r.int(0)?);
        }
    }
    let rid_of = |k: &(String, String)| {
        rids.get(k).copied().ok_or(StoreError::Internal(
            "a written resource row was not returned",
        ))
    };
    // 4. The versions. They, and the index rows' changes below, are written together at the end
    // (one statement on PostgreSQL, see `Writes`).
    let mut writes = Writes::default();
    for chunk in versions.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO resource_versions (rid, version, last_updated, message_id, deleted, content) VALUES {}",
            values_list(chunk.len(), 6)
        );
        let mut args = Vec::with_capacity(chunk.len() * 6);
        for (key, version, i, message_id) in chunk {
            let r = items[*i].1;
            args.extend([
                Arg::Int(rid_of(key)?),
                Arg::Int(*version),
                Arg::Int(now),
                Arg::Int(*message_id),
                Arg::Int(r.deleted as i64),
                Arg::Text(r.content.clone()),
            ]);
        }
        writes.push(sql, args);
    }
    // 5. Index rows: the difference between the previous version's rows and the current ones.
    // A new version usually changes few of them (an Observation pointing at this visit's
    // Encounter): rewriting them all dirtied a leaf page of every index B-tree per resource.
    let mut wanted: [HashSet<Vec<Key>>; 5] = Default::default();
    for (key, s) in &changed {
        let (Some(i), false) = (s.index, s.deleted) else {
            continue;
        };
        let rid = Key::I(rid_of(key)?);
        let ix = &items[i].1.index;
        let t = |v: &str| Key::T(v.to_string());
        for (k, sys, code) in &ix.tokens {
            wanted[0].insert(vec![rid.clone(), t(k), t(sys), t(code)]);
        }
        for (k, norm, exact) in &ix.strings {
            wanted[1].insert(vec![rid.clone(), t(k), t(norm), t(exact)]);
        }
        for (k, lo, hi) in &ix.dates {
            wanted[2].insert(vec![rid.clone(), t(k), Key::I(*lo), Key::I(*hi)]);
        }
        for (k, target) in &ix.refs {
            wanted[3].insert(vec![rid.clone(), t(k), t(target)]);
        }
        for (k, v, sys, code) in &ix.quantities {
            wanted[4].insert(vec![
                rid.clone(),
                t(k),
                Key::R(v.to_bits()),
                t(sys),
                t(code),
            ]);
        }
    }
    // The previous versions' rows of the index tables: on PostgreSQL every table in one
    // statement per chunk (a statement is a round trip); on SQLite a statement per table, whose
    // text recurs and stays prepared (a five-table union measured slower there).
    let old: Vec<i64> = changed.iter().filter_map(|(_, s)| s.rid).collect();
    let mut existing: [HashSet<Vec<Key>>; 5] = Default::default();
    let all: Vec<usize> = (0..INDEX_TABLES.len()).collect();
    let few = conn.few_statements();
    let table_sets: Vec<Vec<usize>> = if few {
        vec![all]
    } else {
        all.into_iter().map(|t| vec![t]).collect()
    };
    let mut reads: Vec<(&[i64], &[usize])> = Vec::new();
    for chunk in old.chunks(CHUNK) {
        for tables in &table_sets {
            reads.push((chunk, tables));
        }
    }
    let slots: Vec<Vec<(usize, &Kind)>> = INDEX_TABLES.iter().map(union_slots).collect();
    for (chunk, tables) in reads {
        let sql = existing_rows_sql(tables, chunk.len());
        let args: Vec<Arg> = tables
            .iter()
            .flat_map(|_| chunk.iter().map(|rid| Arg::Int(*rid)))
            .collect();
        for r in conn.fetch("read index rows", &sql, &args).await? {
            let tag = r.int(0)?;
            let Some((n, table_slots)) = usize::try_from(tag)
                .ok()
                .and_then(|n| slots.get(n).map(|t| (n, t)))
            else {
                return Err(StoreError::Internal("an index row of an unknown table"));
            };
            let mut row = Vec::with_capacity(table_slots.len());
            for &(slot, kind) in table_slots {
                row.push(match kind {
                    Kind::Int => Key::I(r.int(slot)?),
                    Kind::Real => Key::R(r.real(slot)?.to_bits()),
                    Kind::Text => Key::T(r.text(slot)?),
                });
            }
            existing[n].insert(row);
        }
    }
    for (n, table) in INDEX_TABLES.iter().enumerate() {
        let cols = table.cols.join(", ");
        let existing = &existing[n];
        // Rows no longer wanted, matched by primary key: `(rid = $1 AND key = $2 …) OR (…)`, one
        // statement per table on PostgreSQL (SQLite scanned the whole table for the row-value
        // form `(cols) IN (VALUES …)`), one row per statement on SQLite, whose text recurs and
        // stays prepared (measured faster there than preparing an OR of another length each time).
        let gone: Vec<&Vec<Key>> = existing.difference(&wanted[n]).collect();
        let width = table.cols.len();
        let per_statement = if few { CHUNK } else { 1 };
        let one_row = delete_by_key_sql(table, 1);
        for chunk in gone.chunks(per_statement) {
            let sql = match chunk.len() {
                1 => one_row.clone(),
                n => delete_by_key_sql(table, n),
            };
            let args: Vec<Arg> = chunk
                .iter()
                .flat_map(|row| row.iter().map(Key::arg))
                .collect();
            writes.push(sql, args);
        }
        let mut added: Vec<&Vec<Key>> = wanted[n].difference(existing).collect();
        // Insert in key order: neighbouring rows land on the same leaf pages.
        added.sort_unstable();
        for chunk in added.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO {} ({cols}) VALUES {}",
                table.name,
                values_list(chunk.len(), width)
            );
            let args: Vec<Arg> = chunk
                .iter()
                .flat_map(|row| row.iter().map(Key::arg))
                .collect();
            writes.push(sql, args);
        }
    }
    writes
        .run(conn, "write resource versions and index rows")
        .await
}

/// `DELETE FROM table WHERE (rid = $1 AND key = $2 …) OR (…)` for `rows` rows of `table`'s columns.
fn delete_by_key_sql(table: &IndexTable, rows: usize) -> String {
    let width = table.cols.len();
    let arms: Vec<String> = (0..rows)
        .map(|r| {
            let conds: Vec<String> = table
                .cols
                .iter()
                .enumerate()
                .map(|(c, col)| format!("{col} = ${}", r * width + c + 1))
                .collect();
            format!("({})", conds.join(" AND "))
        })
        .collect();
    format!("DELETE FROM {} WHERE {}", table.name, arms.join(" OR "))
}

/// Write statements (`INSERT`, `DELETE`) that do not depend on one another's results. Where the
/// database allows data-modifying statements in `WITH` (PostgreSQL), they are sent as few
/// statements as the parameter limit allows — each statement is a round trip — and one by one
/// elsewhere (SQLite, where a statement is a function call).
#[derive(Default)]
struct Writes {
    statements: Vec<(String, Vec<Arg>)>,
}

/// Parameters per combined statement (PostgreSQL's limit is 65,535).
const MAX_COMBINED_ARGS: usize = 30_000;

impl Writes {
    fn push(&mut self, sql: String, args: Vec<Arg>) {
        self.statements.push((sql, args));
    }

    async fn run<E: super::exec::Exec>(
        self,
        conn: &mut E,
        op: &'static str,
    ) -> Result<(), StoreError> {
        if !conn.few_statements() {
            for (sql, args) in &self.statements {
                conn.execute(op, sql, args).await?;
            }
            return Ok(());
        }
        let mut group: Vec<(String, Vec<Arg>)> = Vec::new();
        let mut n_args = 0;
        for (sql, args) in self.statements {
            if !group.is_empty() && n_args + args.len() > MAX_COMBINED_ARGS {
                let (sql, args) = combine(std::mem::take(&mut group));
                conn.execute(op, &sql, &args).await?;
                n_args = 0;
            }
            n_args += args.len();
            group.push((sql, args));
        }
        if !group.is_empty() {
            let (sql, args) = combine(group);
            conn.execute(op, &sql, &args).await?;
        }
        Ok(())
    }
}

/// One statement running every statement of `group`: `WITH w0 AS (s0), w1 AS (s1) s2`, their
/// placeholders renumbered after the arguments of the statements before them.
fn combine(group: Vec<(String, Vec<Arg>)>) -> (String, Vec<Arg>) {
    let last = group.len().saturating_sub(1);
    let mut sql = String::new();
    let mut args = Vec::new();
    for (i, (s, a)) in group.into_iter().enumerate() {
        let shifted = shift_placeholders(&s, args.len());
        match (i, i == last) {
            (0, true) => sql = shifted,
            (0, false) => sql = format!("WITH w0 AS ({shifted})"),
            (_, false) => sql.push_str(&format!(", w{i} AS ({shifted})")),
            (_, true) => {
                sql.push(' ');
                sql.push_str(&shifted);
            }
        }
        args.extend(a);
    }
    (sql, args)
}

/// `sql` with every placeholder `$n` renumbered to `$(n + by)` (our statements have no `$` in
/// literals).
fn shift_placeholders(sql: &str, by: usize) -> String {
    if by == 0 {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..=pos]);
        rest = &rest[pos + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// A column value of an index row, comparable (floats by their bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    I(i64),
    T(String),
    R(u64),
}

impl Key {
    fn arg(&self) -> Arg {
        match self {
            Key::I(v) => Arg::Int(*v),
            Key::T(v) => Arg::Text(v.clone()),
            Key::R(bits) => Arg::Real(f64::from_bits(*bits)),
        }
    }
}

/// An index table: its columns (the whole primary key) and their types, in the order of
/// [`IndexRows`]' tuples after `rid`.
struct IndexTable {
    name: &'static str,
    cols: &'static [&'static str],
    kinds: &'static [Kind],
}

/// Column type of an index table.
enum Kind {
    Int,
    Text,
    Real,
}

use Kind::{Int, Real, Text};

const INDEX_TABLES: [IndexTable; 5] = [
    IndexTable {
        name: "idx_token",
        cols: &["rid", "key", "system", "code"],
        kinds: &[Int, Text, Text, Text],
    },
    IndexTable {
        name: "idx_string",
        cols: &["rid", "key", "norm", "exact"],
        kinds: &[Int, Text, Text, Text],
    },
    IndexTable {
        name: "idx_date",
        cols: &["rid", "key", "lo", "hi"],
        kinds: &[Int, Text, Int, Int],
    },
    IndexTable {
        name: "idx_ref",
        cols: &["rid", "key", "target"],
        kinds: &[Int, Text, Text],
    },
    IndexTable {
        name: "idx_quantity",
        cols: &["rid", "key", "value", "system", "code"],
        kinds: &[Int, Text, Real, Text, Text],
    },
];

/// Columns of the statement that reads every index table's rows at once: `tag` (the table's
/// position in [`INDEX_TABLES`]), `rid`, `key`, then typed slots that each table fills with its
/// remaining columns in order (texts, integers, one real), the others NULL.
const UNION_TEXT: [usize; 2] = [3, 4];
const UNION_INT: [usize; 2] = [5, 6];
const UNION_REAL: usize = 7;
const UNION_WIDTH: usize = 8;

/// Where each column of `table` (in `cols` order) is in the union statement, and its type.
fn union_slots(table: &IndexTable) -> Vec<(usize, &'static Kind)> {
    let (mut texts, mut ints) = (UNION_TEXT.iter(), UNION_INT.iter());
    table
        .kinds
        .iter()
        .enumerate()
        .map(|(c, kind)| {
            let slot = match (c, kind) {
                (0, _) => 1,
                (1, _) => 2,
                (_, Kind::Text) => texts.next().copied().unwrap_or(UNION_WIDTH),
                (_, Kind::Int) => ints.next().copied().unwrap_or(UNION_WIDTH),
                (_, Kind::Real) => UNION_REAL,
            };
            (slot, kind)
        })
        .collect()
}

/// `SELECT tag, rid, key, t1, t2, i1, i2, r1 FROM idx_token WHERE rid IN (…) UNION ALL …` over
/// the index tables at positions `tables`, for `n` rids (bound once per table).
fn existing_rows_sql(tables: &[usize], n: usize) -> String {
    let mut parts = Vec::with_capacity(tables.len());
    for (part, (t, table)) in tables
        .iter()
        .filter_map(|&t| INDEX_TABLES.get(t).map(|table| (t, table)))
        .enumerate()
    {
        // Slots the table does not fill are typed NULLs: PostgreSQL resolves one type per
        // union column.
        let mut exprs: Vec<String> = (0..UNION_WIDTH)
            .map(|slot| match slot {
                0 => format!("CAST({t} AS BIGINT)"),
                s if UNION_INT.contains(&s) => "CAST(NULL AS BIGINT)".to_string(),
                UNION_REAL => "CAST(NULL AS DOUBLE PRECISION)".to_string(),
                _ => "CAST(NULL AS TEXT)".to_string(),
            })
            .collect();
        for ((slot, _), col) in union_slots(table).into_iter().zip(table.cols) {
            if let Some(e) = exprs.get_mut(slot) {
                *e = (*col).to_string();
            }
        }
        parts.push(format!(
            "SELECT {} FROM {} WHERE rid IN ({})",
            exprs.join(", "),
            table.name,
            placeholders_from(part * n + 1, n)
        ));
    }
    parts.join(" UNION ALL ")
}

/// `lo`/`hi` columns against a search range per prefix (R4 date search semantics).
fn range_cond(prefix: Prefix, lo_col: &str, hi_col: &str, plo: &str, phi: &str) -> String {
    let within = format!("({lo_col} >= {plo} AND {hi_col} <= {phi})");
    match prefix {
        Prefix::Eq => within,
        Prefix::Ne => format!("NOT {within}"),
        Prefix::Gt => format!("{hi_col} > {phi}"),
        Prefix::Lt => format!("{lo_col} < {plo}"),
        Prefix::Ge => format!("({hi_col} > {phi} OR {within})"),
        Prefix::Le => format!("({lo_col} < {plo} OR {within})"),
    }
}

/// The upper bound of a prefix range in byte order: the value followed by U+10FFFF.
fn prefix_end(v: &str) -> String {
    format!("{v}\u{10FFFF}")
}

/// A boolean SQL expression for `cond` on the `resources` row named `alias` (`r`, `c`).
fn cond_sql(sql: &mut Sql, cond: &Cond, alias: &str) -> String {
    let rid = format!("{alias}.rid");
    match cond {
        Cond::Id(id) => {
            let p = sql.text(id);
            format!("{rid} IN (SELECT rid FROM resources WHERE id = {p})")
        }
        Cond::LastUpdated(prefix, lo, hi) => {
            let (plo, phi) = (sql.int(*lo), sql.int(*hi));
            // The row's own column: the database searches `resources_updated (type,
            // last_updated, rid)` by range (a subquery over all resources scanned the whole
            // index: 0.19 s at 500k resources).
            let col = format!("{alias}.last_updated");
            range_cond(*prefix, &col, &col, &plo, &phi)
        }
        Cond::Token { key, system, code } => {
            let k = sql.text(key);
            let mut c = format!("t.key = {k}");
            if let Some(code) = code {
                c += &format!(" AND t.code = {}", sql.text(code));
            }
            if let Some(system) = system {
                c += &format!(" AND t.system = {}", sql.text(system));
            }
            format!("EXISTS (SELECT 1 FROM idx_token t WHERE t.rid = {rid} AND {c})")
        }
        Cond::Str { key, mode, value } => {
            let k = sql.text(key);
            let c = match mode {
                StrMode::Exact => format!("s.exact = {}", sql.text(value)),
                StrMode::Prefix => {
                    let lo = sql.text(value);
                    let hi = sql.text(&prefix_end(value));
                    format!("s.norm >= {lo} AND s.norm < {hi}")
                }
                StrMode::Contains => {
                    let p = sql.text(&format!("%{}%", like_escape(value)));
                    format!("s.norm LIKE {p} ESCAPE '\\'")
                }
            };
            format!(
                "EXISTS (SELECT 1 FROM idx_string s WHERE s.rid = {rid} AND s.key = {k} AND {c})"
            )
        }
        Cond::Date {
            key,
            prefix,
            lo,
            hi,
        } => {
            let k = sql.text(key);
            let (plo, phi) = (sql.int(*lo), sql.int(*hi));
            let c = range_cond(*prefix, "d.lo", "d.hi", &plo, &phi);
            format!("EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = {rid} AND d.key = {k} AND {c})")
        }
        Cond::Ref { key, targets } => {
            let k = sql.text(key);
            let list = text_list(sql, targets);
            format!(
                "EXISTS (SELECT 1 FROM idx_ref f WHERE f.rid = {rid} AND f.key = {k} AND f.target IN ({list}))"
            )
        }
        Cond::Chain {
            key,
            target_type,
            inner,
        } => {
            let k = sql.text(key);
            let ty = sql.text(target_type);
            let c = cond_sql(sql, inner, "c");
            let prefix_len = target_type.len() + 2;
            format!(
                "EXISTS (SELECT 1 FROM idx_ref f JOIN resources c ON c.type = {ty} \
                 AND c.id = SUBSTR(f.target, {prefix_len}) \
                 WHERE f.rid = {rid} AND f.key = {k} AND f.target >= {ty} || '/' AND f.target < {ty} || '0' \
                 AND c.deleted = 0 AND {c})"
            )
        }
        Cond::Quantity {
            key,
            prefix,
            lo,
            hi,
            system,
            code,
        } => {
            let k = sql.text(key);
            let plo = sql.arg(Arg::Real(*lo));
            let phi = sql.arg(Arg::Real(*hi));
            let mut c = match prefix {
                Prefix::Eq => format!("q.value >= {plo} AND q.value < {phi}"),
                Prefix::Ne => format!("NOT (q.value >= {plo} AND q.value < {phi})"),
                Prefix::Gt => format!("q.value >= {phi}"),
                Prefix::Lt => format!("q.value < {plo}"),
                Prefix::Ge => format!("q.value >= {plo}"),
                Prefix::Le => format!("q.value < {phi}"),
            };
            if let Some(s) = system {
                c += &format!(" AND q.system = {}", sql.text(s));
            }
            if let Some(s) = code {
                c += &format!(" AND q.code = {}", sql.text(s));
            }
            format!(
                "EXISTS (SELECT 1 FROM idx_quantity q WHERE q.rid = {rid} AND q.key = {k} AND {c})"
            )
        }
    }
}

/// Placeholders for `values`, comma-separated (an `IN (…)` list).
fn text_list(sql: &mut Sql, values: &[String]) -> String {
    values
        .iter()
        .map(|v| sql.text(v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How well `c` narrows a search when the database starts from its index (lower is better; 9:
/// not at all).
fn driver_rank(c: &Cond) -> u8 {
    match c {
        Cond::Id(_) => 0,
        Cond::Ref { .. } => 1,
        Cond::Token { code: Some(_), .. } => 2,
        // Through the referenced resources the inner condition finds; without one, every
        // resource with a reference at the element.
        Cond::Chain { inner, .. } => {
            if driver_rank(inner) < 9 {
                3
            } else {
                8
            }
        }
        // A name or address prefix: an index range; `:contains` has none.
        Cond::Str {
            mode: StrMode::Prefix | StrMode::Exact,
            ..
        } => 4,
        // A birth date or a day: `lo` within the range (`lo ≤ hi`), an index range on `lo`.
        Cond::Date {
            prefix: Prefix::Eq, ..
        } => 5,
        _ => 9,
    }
}

/// A set of rids to start from that contains every match, when one condition narrows the search
/// well (an id, a reference, an identifier, a string prefix, a date): lets the database drive from
/// that index instead of probing every resource of the type.
fn driver_sql(sql: &mut Sql, q: &SearchQuery) -> Option<String> {
    let group = q
        .and
        .iter()
        .filter(|g| g.iter().all(|c| driver_rank(c) < 9))
        .min_by_key(|g| g.iter().map(driver_rank).max().unwrap_or(9))?;
    let parts: Vec<String> = group.iter().map(|c| cond_driver(sql, c)).collect();
    Some(parts.join(" UNION "))
}

/// A `SELECT rid …` containing every resource that satisfies `c` (when `driver_rank(c) < 9`).
fn cond_driver(sql: &mut Sql, c: &Cond) -> String {
    match c {
        Cond::Id(id) => {
            let p = sql.text(id);
            format!("SELECT rid FROM resources WHERE id = {p}")
        }
        Cond::Ref { key, targets } => {
            let k = sql.text(key);
            let list = text_list(sql, targets);
            format!("SELECT rid FROM idx_ref WHERE target IN ({list}) AND key = {k}")
        }
        Cond::Token {
            key,
            code: Some(code),
            ..
        } => {
            let k = sql.text(key);
            let c = sql.text(code);
            format!("SELECT rid FROM idx_token WHERE key = {k} AND code = {c}")
        }
        Cond::Chain {
            key,
            target_type,
            inner,
        } if driver_rank(inner) < 9 => {
            // The resources referring to one the inner condition finds (e.g.
            // `subject:Patient.identifier`: the patients with that identifier first).
            let k = sql.text(key);
            let ty = sql.text(target_type);
            let d = cond_driver(sql, inner);
            format!(
                "SELECT rid FROM idx_ref WHERE key = {k} AND target IN \
                     (SELECT {ty} || '/' || c.id FROM resources c WHERE c.type = {ty} AND c.rid IN ({d}))"
            )
        }
        Cond::Chain { key, .. } => {
            // Every resource with a reference at this element (the chain itself is checked
            // by the condition).
            let k = sql.text(key);
            format!("SELECT rid FROM idx_ref WHERE key = {k}")
        }
        Cond::Str {
            key,
            mode: StrMode::Prefix,
            value,
        } => {
            let k = sql.text(key);
            let lo = sql.text(value);
            let hi = sql.text(&prefix_end(value));
            format!("SELECT rid FROM idx_string WHERE key = {k} AND norm >= {lo} AND norm < {hi}")
        }
        Cond::Str {
            key,
            mode: StrMode::Exact,
            value,
        } => {
            // Rows are indexed with `norm = normalize(exact)`.
            let k = sql.text(key);
            let n = sql.text(&crate::fhir::search::normalize(value));
            let e = sql.text(value);
            format!("SELECT rid FROM idx_string WHERE key = {k} AND norm = {n} AND exact = {e}")
        }
        Cond::Date {
            key,
            prefix: Prefix::Eq,
            lo,
            hi,
        } => {
            // `eq`: the value's range lies within the parameter's (`lo ≥ plo AND hi ≤ phi`).
            let k = sql.text(key);
            let (plo, phi) = (sql.int(*lo), sql.int(*hi));
            format!(
                "SELECT rid FROM idx_date WHERE key = {k} AND lo >= {plo} AND lo <= {phi} AND hi <= {phi}"
            )
        }
        _ => String::from("SELECT rid FROM resources"),
    }
}

/// The WHERE clause (conditions only) of a search, over `resources r`.
fn where_sql(sql: &mut Sql, q: &SearchQuery) -> String {
    let ty = sql.text(&q.resource);
    let mut conds = vec![format!("r.type = {ty}"), "r.deleted = 0".to_string()];
    if let Some(d) = driver_sql(sql, q) {
        conds.push(format!("r.rid IN ({d})"));
    }
    for group in &q.and {
        let alts: Vec<String> = group.iter().map(|c| cond_sql(sql, c, "r")).collect();
        conds.push(if alts.len() == 1 {
            alts.into_iter().next().unwrap_or_default()
        } else {
            format!("({})", alts.join(" OR "))
        });
    }
    conds.join(" AND ")
}

impl Store {
    /// The current version of `Type/id` (deleted ones too: the caller answers 410).
    pub async fn read_resource(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<ResourceRow>, StoreError> {
        self.fetch_version(resource_type, id, None).await
    }

    /// One version of `Type/id`.
    pub async fn vread_resource(
        &self,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<ResourceRow>, StoreError> {
        self.fetch_version(resource_type, id, Some(version)).await
    }

    /// `version`, or the current one.
    async fn fetch_version(
        &self,
        resource_type: &str,
        id: &str,
        version: Option<i64>,
    ) -> Result<Option<ResourceRow>, StoreError> {
        let mut sql = Sql::default();
        let (i, t) = (sql.text(id), sql.text(resource_type));
        let which = match version {
            Some(v) => format!("v.version = {}", sql.int(v)),
            None => "v.version = r.version".to_string(),
        };
        sql.text = format!(
            "SELECT {ROW_COLS} FROM resources r JOIN resource_versions v ON v.rid = r.rid \
             WHERE r.id = {i} AND r.type = {t} AND {which}"
        );
        Ok(self
            .resource_rows("read a resource", &sql.text, &sql.args)
            .await?
            .into_iter()
            .next())
    }

    /// Rows of a read-only query, each decoded by `decode`: on SQLite through a direct reader
    /// connection (see `Readers`), on PostgreSQL through the pool.
    async fn read_rows<T>(
        &self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
        decode: impl Fn(&dyn Cols) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        if let Some(readers) = self.readers() {
            return readers.run(|c| {
                c.fetch_now(op, sql, args)?
                    .iter()
                    .map(|r| decode(r))
                    .collect()
            });
        }
        let rows = super::sql::bind_all(sql, args)
            .fetch_all(self.pool())
            .await
            .map_err(db(op))?;
        rows.iter().map(|r| decode(r)).collect()
    }

    /// Rows of `N` integer columns (ids, counts, sort keys).
    async fn int_rows<const N: usize>(
        &self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<[i64; N]>, StoreError> {
        self.read_rows(op, sql, args, |r| {
            let mut out = [0i64; N];
            for (i, o) in out.iter_mut().enumerate() {
                *o = r.int(i)?;
            }
            Ok(out)
        })
        .await
    }

    /// [`ROW_COLS`] rows.
    async fn resource_rows(
        &self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<ResourceRow>, StoreError> {
        self.read_rows(op, sql, args, resource_row).await
    }

    /// History, newest first: of one resource (`id`), of a type, or of everything.
    pub async fn history(
        &self,
        resource_type: Option<&str>,
        id: Option<&str>,
        since: Option<i64>,
        count: u32,
        before: Option<(i64, i64, i64)>,
    ) -> Result<HistoryPage, StoreError> {
        let mut sql = Sql::default();
        let mut conds = Vec::new();
        if let Some(t) = resource_type {
            conds.push(format!("r.type = {}", sql.text(t)));
        }
        if let Some(i) = id {
            conds.push(format!("r.id = {}", sql.text(i)));
        }
        if let Some(s) = since {
            conds.push(format!("v.last_updated >= {}", sql.int(s)));
        }
        let from = "FROM resource_versions v JOIN resources r ON r.rid = v.rid";
        let wh = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        sql.text = format!("SELECT COUNT(*) {from}{wh}");
        let total: i64 = sql
            .query()
            .fetch_one(self.pool())
            .await
            .map_err(db("count history"))?
            .try_get(0)
            .map_err(db("decode a count"))?;
        if let Some((lu, rid, ver)) = before {
            let (a, b, c) = (sql.int(lu), sql.int(rid), sql.int(ver));
            conds.push(format!(
                "(v.last_updated < {a} OR (v.last_updated = {a} AND (v.rid < {b} OR (v.rid = {b} AND v.version < {c}))))"
            ));
        }
        let wh = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let limit = count.clamp(1, crate::fhir::search::query::MAX_COUNT) as i64;
        sql.text = format!(
            "SELECT {ROW_COLS} {from}{wh} ORDER BY v.last_updated DESC, v.rid DESC, v.version DESC LIMIT {}",
            limit + 1
        );
        let mut versions = self
            .resource_rows("read history", &sql.text, &sql.args)
            .await?;
        let next = if versions.len() as i64 > limit {
            versions.truncate(limit as usize);
            versions.last().map(|v| (v.last_updated, v.rid, v.version))
        } else {
            None
        };
        Ok(HistoryPage {
            versions,
            total,
            next,
        })
    }

    /// Current versions by rid, in the order given (missing ones left out).
    async fn rows_by_rid(&self, rids: &[i64]) -> Result<Vec<ResourceRow>, StoreError> {
        let mut by_rid: HashMap<i64, ResourceRow> = HashMap::new();
        for chunk in rids.chunks(CHUNK) {
            let sql = format!(
                "SELECT {ROW_COLS} FROM resources r JOIN resource_versions v \
                 ON v.rid = r.rid AND v.version = r.version WHERE r.rid IN ({}) AND r.deleted = 0",
                placeholders(chunk.len())
            );
            let args: Vec<Arg> = chunk.iter().map(|rid| Arg::Int(*rid)).collect();
            for row in self.resource_rows("read resources", &sql, &args).await? {
                by_rid.insert(row.rid, row);
            }
        }
        Ok(rids.iter().filter_map(|r| by_rid.remove(r)).collect())
    }

    /// A search page (see [`SearchQuery`]).
    pub async fn search(
        &self,
        q: &SearchQuery,
        count_total: bool,
    ) -> Result<SearchPage, StoreError> {
        let mut sql = Sql::default();
        let wh = where_sql(&mut sql, q);
        let count_sql = Sql {
            text: format!("SELECT COUNT(*) FROM resources r WHERE {wh}"),
            args: sql.args.clone(),
        };
        let count = async || -> Result<i64, StoreError> {
            let rows = self
                .int_rows::<1>("count search matches", &count_sql.text, &count_sql.args)
                .await?;
            Ok(rows.first().map_or(0, |[n]| *n))
        };
        if q.summary_count || q.count == 0 {
            return Ok(SearchPage {
                total: Some(count().await?),
                ..SearchPage::default()
            });
        }
        // Sort key: a number per resource (missing dates last), ties broken by rid.
        let (sk, desc) = match &q.sort {
            None => ("r.rid".to_string(), false),
            Some(s) => {
                let expr = match s.date_key {
                    None => "r.last_updated".to_string(),
                    Some(k) => {
                        let k = sql.text(k);
                        let (agg, missing) = if s.desc {
                            ("MAX(d.hi)", i64::MIN)
                        } else {
                            ("MIN(d.lo)", i64::MAX)
                        };
                        format!(
                            "COALESCE((SELECT {agg} FROM idx_date d WHERE d.rid = r.rid AND d.key = {k}), {missing})"
                        )
                    }
                };
                (expr, s.desc)
            }
        };
        let mut outer = String::new();
        if let Some((v, rid)) = q.after {
            let (a, b) = (sql.int(v), sql.int(rid));
            outer = if desc {
                format!(" WHERE (t.sk < {a} OR (t.sk = {a} AND t.rid < {b}))")
            } else {
                format!(" WHERE (t.sk > {a} OR (t.sk = {a} AND t.rid > {b}))")
            };
        }
        let dir = if desc { "DESC" } else { "ASC" };
        let limit = q.count as i64;
        sql.text = format!(
            "SELECT t.rid, t.sk FROM (SELECT r.rid AS rid, {sk} AS sk FROM resources r WHERE {wh}) t{outer} \
             ORDER BY t.sk {dir}, t.rid {dir} LIMIT {}",
            limit + 1
        );
        let mut hits: Vec<(i64, i64)> = self
            .int_rows::<2>("search", &sql.text, &sql.args)
            .await?
            .into_iter()
            .map(|[rid, sk]| (rid, sk))
            .collect();
        let next = if hits.len() as i64 > limit {
            hits.truncate(limit as usize);
            hits.last().map(|(rid, sk)| (*sk, *rid))
        } else {
            None
        };
        // A first page that holds every match is its own count: no COUNT query.
        let total = match (count_total, q.after, next) {
            (false, _, _) => None,
            (true, None, None) => Some(hits.len() as i64),
            _ => Some(count().await?),
        };
        let rids: Vec<i64> = hits.iter().map(|(rid, _)| *rid).collect();
        let matches = self.rows_by_rid(&rids).await?;
        let included = self.includes(&matches, &q.include, &q.revinclude).await?;
        Ok(SearchPage {
            total,
            matches,
            included,
            next,
        })
    }

    async fn includes(
        &self,
        matches: &[ResourceRow],
        include: &[Include],
        revinclude: &[Include],
    ) -> Result<Vec<ResourceRow>, StoreError> {
        if matches.is_empty() || (include.is_empty() && revinclude.is_empty()) {
            return Ok(Vec::new());
        }
        let have: HashSet<i64> = matches.iter().map(|m| m.rid).collect();
        let mut extra: Vec<i64> = Vec::new();
        for inc in include {
            let sources: Vec<i64> = matches
                .iter()
                .filter(|m| m.resource_type == inc.source)
                .map(|m| m.rid)
                .collect();
            if sources.is_empty() {
                continue;
            }
            let mut sql = Sql::default();
            let list = sources
                .iter()
                .map(|r| sql.int(*r))
                .collect::<Vec<_>>()
                .join(", ");
            let mut c = format!("rid IN ({list})");
            if let Some(k) = inc.key {
                c += &format!(" AND key = {}", sql.text(k));
            }
            sql.text = format!("SELECT DISTINCT target FROM idx_ref WHERE {c}");
            let targets: Vec<String> = sql
                .query()
                .fetch_all(self.pool())
                .await
                .map_err(db("find included references"))?
                .iter()
                .filter_map(|r| r.try_get::<String, _>(0).ok())
                .filter(|t| {
                    inc.target
                        .as_ref()
                        .is_none_or(|ty| t.starts_with(&format!("{ty}/")))
                })
                .collect();
            extra.extend(self.rids_by_keys_exact(&targets).await?);
        }
        for inc in revinclude {
            let targets: Vec<String> = matches
                .iter()
                .filter(|m| inc.target.as_ref().is_none_or(|t| *t == m.resource_type))
                .map(|m| format!("{}/{}", m.resource_type, m.id))
                .collect();
            for chunk in targets.chunks(CHUNK) {
                let mut sql = Sql::default();
                let list = chunk
                    .iter()
                    .map(|t| sql.text(t))
                    .collect::<Vec<_>>()
                    .join(", ");
                let src = sql.text(&inc.source);
                let mut c = format!("f.target IN ({list}) AND r.type = {src} AND r.deleted = 0");
                if let Some(k) = inc.key {
                    c += &format!(" AND f.key = {}", sql.text(k));
                }
                sql.text = format!(
                    "SELECT DISTINCT f.rid FROM idx_ref f JOIN resources r ON r.rid = f.rid WHERE {c}"
                );
                for r in sql
                    .query()
                    .fetch_all(self.pool())
                    .await
                    .map_err(db("find reverse includes"))?
                {
                    extra.push(r.try_get(0).map_err(db("read rid"))?);
                }
            }
        }
        let mut seen = have;
        extra.retain(|r| seen.insert(*r));
        self.rows_by_rid(&extra).await
    }

    /// rids of `Type/id` keys (types checked).
    async fn rids_by_keys_exact(&self, keys: &[String]) -> Result<Vec<i64>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let pairs: Vec<(&str, &str)> = chunk.iter().filter_map(|k| k.split_once('/')).collect();
            if pairs.is_empty() {
                continue;
            }
            let sql = format!(
                "SELECT rid, type, id FROM resources WHERE deleted = 0 AND id IN ({})",
                placeholders(pairs.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (_, id) in &pairs {
                q = q.bind(*id);
            }
            let wanted: HashSet<(&str, &str)> = pairs.iter().copied().collect();
            for r in q
                .fetch_all(self.pool())
                .await
                .map_err(db("look up resources"))?
            {
                let ty: String = r.try_get(1).map_err(db("read type"))?;
                let id: String = r.try_get(2).map_err(db("read id"))?;
                if wanted.contains(&(ty.as_str(), id.as_str())) {
                    out.push(r.try_get(0).map_err(db("read rid"))?);
                }
            }
        }
        Ok(out)
    }

    /// `Patient/{id}/$everything`: the patient, every resource referring to it, and the resources
    /// those refer to (practitioners, locations, organizations, encounters…), in rid order, paged
    /// after `after`. `None` when there is no such patient.
    pub async fn everything(
        &self,
        patient_id: &str,
        since: Option<i64>,
        count: u32,
        after: Option<i64>,
    ) -> Result<Option<(Vec<ResourceRow>, i64, Option<i64>)>, StoreError> {
        let Some(patient) = self.read_resource("Patient", patient_id).await? else {
            return Ok(None);
        };
        if patient.deleted {
            return Ok(None);
        }
        let target = format!("Patient/{patient_id}");
        let referring: Vec<i64> = sqlx::query(
            "SELECT DISTINCT f.rid FROM idx_ref f JOIN resources r ON r.rid = f.rid \
             WHERE f.target = $1 AND r.deleted = 0",
        )
        .bind(target.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(db("find resources of a patient"))?
        .iter()
        .filter_map(|r| r.try_get(0).ok())
        .collect();
        let mut all: HashSet<i64> = referring.iter().copied().collect();
        all.insert(patient.rid);
        let mut second: Vec<String> = Vec::new();
        for chunk in referring.chunks(CHUNK) {
            let sql = format!(
                "SELECT DISTINCT target FROM idx_ref WHERE rid IN ({})",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for rid in chunk {
                q = q.bind(*rid);
            }
            for r in q
                .fetch_all(self.pool())
                .await
                .map_err(db("find referenced resources"))?
            {
                let t: String = r.try_get(0).map_err(db("read target"))?;
                // Other patients (a linked or merged record) are not this patient's data.
                if !t.starts_with("Patient/") {
                    second.push(t);
                }
            }
        }
        second.sort();
        second.dedup();
        all.extend(self.rids_by_keys_exact(&second).await?);
        let mut rids: Vec<i64> = all.into_iter().collect();
        rids.sort_unstable();
        let mut rows = self.rows_by_rid(&rids).await?;
        if let Some(s) = since {
            rows.retain(|r| r.last_updated >= s);
        }
        let total = rows.len() as i64;
        if let Some(a) = after {
            rows.retain(|r| r.rid > a);
        }
        let limit = count.clamp(1, crate::fhir::search::query::MAX_COUNT) as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| r.rid)
        } else {
            None
        };
        Ok(Some((rows, total, next)))
    }

    /// Refresh the planner statistics (`ANALYZE`). PostgreSQL's autovacuum does this as tables
    /// grow; after a bulk load, run it before relying on search plans (without statistics the
    /// planner guesses one row per condition and can nest loops the wrong way round).
    pub async fn analyze(&self) -> Result<(), StoreError> {
        sqlx::query("ANALYZE")
            .execute(self.pool())
            .await
            .map_err(db("analyze"))?;
        Ok(())
    }

    /// Number of current resources per type.
    pub async fn resource_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT type, COUNT(*) FROM resources WHERE deleted = 0 GROUP BY type ORDER BY type",
        )
        .fetch_all(self.pool())
        .await
        .map_err(db("count resources"))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("decode counts"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_writes_renumber_their_placeholders_in_order() {
        let group = vec![
            (
                "INSERT INTO a (x, y) VALUES ($1, $2)".to_string(),
                vec![Arg::Int(1), Arg::Int(2)],
            ),
            (
                "DELETE FROM b WHERE (x = $1)".to_string(),
                vec![Arg::Int(3)],
            ),
            (
                "INSERT INTO c (x) VALUES ($1), ($2)".to_string(),
                vec![Arg::Int(4), Arg::Int(5)],
            ),
        ];
        let (sql, args) = combine(group);
        assert_eq!(
            sql,
            "WITH w0 AS (INSERT INTO a (x, y) VALUES ($1, $2)), \
             w1 AS (DELETE FROM b WHERE (x = $3)) INSERT INTO c (x) VALUES ($4), ($5)"
        );
        assert_eq!(args.len(), 5);
        let (one, _) = combine(vec![(
            "DELETE FROM t WHERE x = $1".into(),
            vec![Arg::Int(1)],
        )]);
        assert_eq!(one, "DELETE FROM t WHERE x = $1");
        assert_eq!(shift_placeholders("$1, $10, $$", 9), "$10, $19, $$");
    }

    #[test]
    fn every_index_column_has_its_own_slot_in_the_union_read() {
        for table in &INDEX_TABLES {
            let slots = union_slots(table);
            assert_eq!(slots.len(), table.cols.len(), "{}", table.name);
            let mut seen = HashSet::new();
            for (slot, _) in &slots {
                assert!(
                    *slot < UNION_WIDTH,
                    "{}: slot {slot} out of range",
                    table.name
                );
                assert!(seen.insert(*slot), "{}: slot {slot} used twice", table.name);
            }
        }
        let sql = existing_rows_sql(&[0, 1, 2, 3, 4], 2);
        assert_eq!(sql.matches(" UNION ALL ").count(), INDEX_TABLES.len() - 1);
        assert!(
            sql.ends_with("FROM idx_quantity WHERE rid IN ($9, $10)"),
            "{sql}"
        );
        let one = existing_rows_sql(&[3], 2);
        assert!(
            one.starts_with("SELECT CAST(3 AS BIGINT), rid, key, target"),
            "{one}"
        );
        assert!(one.ends_with("FROM idx_ref WHERE rid IN ($1, $2)"), "{one}");
    }

    #[test]
    fn the_spliced_bundle_text_is_the_serialized_bundle() {
        let bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "p1",
                "name": [{"family": "Ünïcode \"quoted\""}], "multipleBirthInteger": 2},
             "request": {"method": "PUT", "url": "Patient/p1"}},
            {"request": {"method": "DELETE", "url": "Observation/o1"}},
            {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Basic"},
             "request": {"method": "POST", "url": "Basic"}},
            {"resource": {"resourceType": "Observation", "id": "o2",
                "valueQuantity": {"value": 98.10}}}
        ]});
        let (text, found) = NewResource::from_bundle(&bundle);
        assert_eq!(text, serde_json::to_string(&bundle).unwrap_or_default());
        let names: Vec<(&str, &str, bool)> = found
            .iter()
            .map(|r| (r.resource_type.as_str(), r.id.as_str(), r.deleted))
            .collect();
        assert_eq!(
            names,
            [
                ("Patient", "p1", false),
                ("Observation", "o1", true),
                ("Observation", "o2", false)
            ]
        );
        assert_eq!(NewResource::from_bundle(&serde_json::json!([1])).0, "[1]");
    }
}
