//! SQL text built with its arguments (`$1…` placeholders, the one syntax both backends take
//! through sqlx's `Any` driver), for the queries whose shape depends on the request.

/// SQL argument.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
    /// Float.
    Real(f64),
    /// Bytes.
    Blob(Vec<u8>),
    /// NULL of an integer column (PostgreSQL types parameters).
    NullInt,
    /// NULL of a text column.
    NullText,
    /// NULL of a bytes column.
    NullBlob,
}

impl Arg {
    /// `Text`, or `Null` for `None`.
    pub(crate) fn opt_text(v: Option<&str>) -> Arg {
        v.map_or(Arg::NullText, |s| Arg::Text(s.to_string()))
    }
    /// `Blob`, or `Null` for `None`.
    pub(crate) fn opt_blob(v: Option<Vec<u8>>) -> Arg {
        v.map_or(Arg::NullBlob, Arg::Blob)
    }
    /// `Int`, or `Null` for `None`.
    pub(crate) fn opt_int(v: Option<i64>) -> Arg {
        v.map_or(Arg::NullInt, Arg::Int)
    }
}

/// A SQL text with its arguments, numbered `$1…` as they are pushed.
#[derive(Default)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }
    pub(crate) fn text(&mut self, s: &str) -> String {
        self.arg(Arg::Text(s.to_string()))
    }
    pub(crate) fn int(&mut self, i: i64) -> String {
        self.arg(Arg::Int(i))
    }
    pub(crate) fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        bind_all(&self.text, &self.args)
    }
}

pub(crate) fn bind_all<'a>(
    sql: &str,
    args: &'a [Arg],
) -> sqlx::query::Query<'a, sqlx::Any, sqlx::any::AnyArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s.as_str()),
            Arg::Int(i) => q.bind(*i),
            Arg::Real(f) => q.bind(*f),
            Arg::Blob(b) => q.bind(b.as_slice()),
            Arg::NullInt => q.bind(None::<i64>),
            Arg::NullText => q.bind(None::<String>),
            Arg::NullBlob => q.bind(None::<Vec<u8>>),
        };
    }
    q
}

/// `v` with the LIKE metacharacters escaped (for `LIKE … ESCAPE '\\'`).
pub(crate) fn like_escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// `($1, $2), ($3, $4)…` for `rows` rows of `cols` columns.
pub(crate) fn values_list(rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            push_placeholder(&mut s, r * cols + c + 1);
        }
        s.push(')');
    }
    s
}

/// Append `$n` (written into `s`: a statement of many rows has thousands of these).
fn push_placeholder(s: &mut String, n: usize) {
    use std::fmt::Write;
    s.push('$');
    let _ = write!(s, "{n}");
}

/// `$1, $2, …, $n`.
pub(crate) fn placeholders(n: usize) -> String {
    placeholders_from(1, n)
}

/// `$first, …`: `n` placeholders numbered from `first` (after arguments bound before them).
pub(crate) fn placeholders_from(first: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * 6);
    for i in first..first + n {
        if i > first {
            s.push_str(", ");
        }
        push_placeholder(&mut s, i);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_lists() {
        assert_eq!(values_list(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values_list(1, 1), "($1)");
        assert_eq!(values_list(0, 4), "");
        assert_eq!(placeholders(3), "$1, $2, $3");
        assert_eq!(placeholders_from(9, 3), "$9, $10, $11");
        assert_eq!(placeholders(0), "");
    }
}
