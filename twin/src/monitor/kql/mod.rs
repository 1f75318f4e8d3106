//! A documented subset of the Kusto Query Language, evaluated exactly, and refused
//! exactly outside it.
//!
//! Invariant: a query either gets the answer Azure Monitor would give for the same
//! rows, or an error in Log Analytics' shape. Three kinds of error:
//!
//! - **syntax** (`SyntaxError`/`SYN0002`, with line and position): the text is not
//!   KQL the twin can read;
//! - **semantic** (`SemanticError`/`SEM0100`): a table or column that does not exist,
//!   or types Kusto would refuse to compare, as Azure answers them;
//! - **unsupported** (`SemanticError` with the inner code `KeyflipTwinUnsupported`):
//!   valid KQL outside the subset. The twin never guesses at an operator, function or
//!   corner of Kusto's semantics it does not model; it says so instead.
//!
//! The subset (`twin/README.md`, "The KQL subset", is the contract keyflip writes its
//! queries to): one table or a `union` of tables, then `where`/`filter`, `project`,
//! `summarize` (`count()`, `countif()`, `min()`, `max()`, `by` columns), `sort by`/
//! `order by`, `top`, `take`/`limit` and `count`; comparisons, string operators
//! (`has`, `contains`, `startswith`, `endswith`, their `_cs` and `!` forms, `=~`,
//! `in`, `in~`), `between`, `and`/`or`/`not()`, `ago()`, `now()`, `datetime()`,
//! timespan literals, `isempty()`/`isnotempty()`/`isnull()`/`isnotnull()`,
//! `tolower()`/`toupper()`, and `+`/`-` on datetimes and timespans.

mod eval;
mod lex;
mod parse;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use serde_json::json;

pub(crate) use eval::{Source, run, tables};

use super::schema::Type;

/// A cell of a table or of a result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Long(i64),
    Real(f64),
    Str(String),
    DateTime(DateTime<Utc>),
    /// 100 ns ticks, as .NET's TimeSpan. (`dynamic` cells are always null: the
    /// twin writes no `AuthorizationDetails`.)
    Timespan(i64),
}

impl Value {
    /// The cell as the query API writes it in `rows`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => json!(b),
            Value::Long(n) => json!(n),
            Value::Real(f) if f.is_finite() => json!(f),
            Value::Real(f) => json!(f.to_string()),
            Value::Str(s) => json!(s),
            Value::DateTime(t) => json!(crate::clock::azure_time(*t)),
            Value::Timespan(ticks) => json!(format_timespan(*ticks)),
        }
    }
}

/// .NET's TimeSpan text: `[-][d.]hh:mm:ss[.fffffff]`, as Kusto prints timespans.
pub(crate) fn format_timespan(ticks: i64) -> String {
    let sign = if ticks < 0 { "-" } else { "" };
    let t = ticks.unsigned_abs();
    let frac = t % 10_000_000;
    let secs = t / 10_000_000;
    let (days, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::from(sign);
    if days > 0 {
        out.push_str(&format!("{days}."));
    }
    out.push_str(&format!("{h:02}:{m:02}:{s:02}"));
    if frac > 0 {
        out.push_str(&format!(".{frac:07}"));
    }
    out
}

/// Why a query was not answered with rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum QueryError {
    /// Text the twin cannot read as KQL.
    Syntax {
        line: usize,
        pos: usize,
        token: String,
    },
    /// A table or column that does not exist, or a type error, as Kusto reports it.
    Semantic { message: String },
    /// Valid KQL outside the subset the twin evaluates.
    Unsupported { what: String },
}

impl QueryError {
    pub fn syntax(line: usize, pos: usize, token: &str) -> Self {
        QueryError::Syntax {
            line,
            pos,
            token: token.to_string(),
        }
    }

    pub fn semantic(message: impl Into<String>) -> Self {
        QueryError::Semantic {
            message: message.into(),
        }
    }

    pub fn unsupported(what: impl Into<String>) -> Self {
        QueryError::Unsupported { what: what.into() }
    }

    /// The `innererror` of Log Analytics' 400 `BadArgumentError` for this error.
    /// Shapes as recorded from the service (grafana/grafana#35224 for SYN0002,
    /// Azure/azure-cli-extensions#3002 and azure-monitor-query's TROUBLESHOOTING.md
    /// for SEM0100).
    pub fn inner_json(&self) -> serde_json::Value {
        match self {
            QueryError::Syntax { line, pos, token } => json!({
                "code": "SyntaxError",
                "message": "A recognition error occurred in the query.",
                "innererror": {
                    "code": "SYN0002",
                    "message": format!("Query could not be parsed at '{token}' on line [{line},{pos}]"),
                    "line": line,
                    "pos": pos,
                    "token": token,
                },
            }),
            QueryError::Semantic { message } => json!({
                "code": "SemanticError",
                "message": "A semantic error occurred.",
                "innererror": {"code": "SEM0100", "message": message},
            }),
            QueryError::Unsupported { what } => json!({
                "code": "SemanticError",
                "message": "A semantic error occurred.",
                "innererror": {
                    "code": "KeyflipTwinUnsupported",
                    "message": format!(
                        "keyflip-twin does not evaluate {what}: it answers only the KQL subset documented in twin/README.md (\"The KQL subset\"), and refuses the rest rather than guess."
                    ),
                },
            }),
        }
    }
}

/// A string comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrOp {
    Has,
    HasCs,
    Contains,
    ContainsCs,
    StartsWith,
    StartsWithCs,
    EndsWith,
    EndsWithCs,
}

impl StrOp {
    fn parse(word: &str) -> Option<StrOp> {
        Some(match word {
            "has" => StrOp::Has,
            "has_cs" => StrOp::HasCs,
            "contains" => StrOp::Contains,
            "contains_cs" => StrOp::ContainsCs,
            "startswith" => StrOp::StartsWith,
            "startswith_cs" => StrOp::StartsWithCs,
            "endswith" => StrOp::EndsWith,
            "endswith_cs" => StrOp::EndsWithCs,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `=~`
    EqCi,
    /// `!~`
    NeCi,
    And,
    Or,
    Add,
    Sub,
    /// A string operator, negated by `!`.
    Str(StrOp, bool),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Column(String),
    Lit(Value),
    Call(String, Vec<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    In {
        lhs: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
        case_insensitive: bool,
    },
    Between {
        lhs: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggFunc {
    Count,
    CountIf,
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Agg {
    pub name: Option<String>,
    pub func: AggFunc,
    pub arg: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SortKey {
    pub expr: Expr,
    pub descending: bool,
    pub nulls_first: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operator {
    Where(Expr),
    Project(Vec<(String, Expr)>),
    Take(u64),
    Summarize {
        aggs: Vec<Agg>,
        by: Vec<(String, Expr)>,
    },
    Sort(Vec<SortKey>),
    Top(u64, SortKey),
    Count,
}

impl Operator {
    /// The operator's name, as Kusto's messages quote it.
    pub fn name(&self) -> &'static str {
        match self {
            Operator::Where(_) => "where",
            Operator::Project(_) => "project",
            Operator::Take(_) => "take",
            Operator::Summarize { .. } => "summarize",
            Operator::Sort(_) => "sort",
            Operator::Top(..) => "top",
            Operator::Count => "count",
        }
    }
}

/// A parsed query: its source tables and the operators piped after them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    pub tables: Vec<String>,
    pub ops: Vec<Operator>,
}

pub(crate) fn parse(src: &str) -> Result<Query, QueryError> {
    let mut q = parse::parse(src)?;
    eval::expand_top(&mut q);
    Ok(q)
}

/// A typed column of a result or an intermediate table.
pub(crate) type Column = (String, Type);
