//! Compiling a parsed query against the tables' schemas (names, types: every error a
//! query can have is found before a row is read) and running it.
//!
//! Kusto's three-valued logic holds: a comparison with a null is null, `where` keeps
//! rows whose predicate is true, `and`/`or` follow SQL's rules. Where Kusto's exact
//! behaviour is not documented well enough to be sure (ordering of strings, `has` at
//! an underscore), the twin refuses rather than guesses.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::parse::FUNCTIONS;
use super::{
    Agg, AggFunc, BinOp, Column, Expr, Operator, Query, QueryError, SortKey, StrOp, Value,
};
use crate::monitor::schema::{Table, Type};

/// The rows of one table the query may see (already cut to what has been ingested
/// and to the request's `timespan`), in the table's column order.
pub(crate) struct Source<'a> {
    pub table: Table,
    pub rows: Vec<&'a [Value]>,
}

/// A query's answer: one table of typed columns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Output {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

/// The tables a query reads (for authorization before it runs), or the error Azure
/// gives for a table that does not exist.
pub(crate) fn tables(q: &Query) -> Result<Vec<Table>, QueryError> {
    q.tables
        .iter()
        .map(|name| {
            Table::parse(name).ok_or_else(|| {
                let op = q.ops.first().map(Operator::name);
                QueryError::semantic(match op {
                    Some(op) => format!(
                        "'{op}' operator: Failed to resolve table or column expression named '{name}'"
                    ),
                    None => format!("Failed to resolve table or column expression named '{name}'"),
                })
            })
        })
        .collect()
}

/// Runs `q` over `sources` (one per table the query names, in that order) at `now`.
pub(crate) fn run(
    q: &Query,
    sources: Vec<Source<'_>>,
    now: DateTime<Utc>,
) -> Result<Output, QueryError> {
    // The source schema: one table's columns, or the union of several in order of
    // first appearance (Kusto's default `union kind=outer`).
    let mut schema: Vec<Column> = Vec::new();
    for s in &sources {
        for (name, ty) in s.table.columns() {
            match schema.iter().find(|(n, _)| n == name) {
                Some((_, t)) if t != ty => {
                    return Err(QueryError::unsupported(format!(
                        "a union whose tables disagree on the type of '{name}'"
                    )));
                }
                Some(_) => {}
                None => schema.push((name.to_string(), *ty)),
            }
        }
    }
    let mut rows: Vec<Cow<'_, [Value]>> = Vec::new();
    if sources.len() == 1 {
        rows.extend(sources[0].rows.iter().map(|r| Cow::Borrowed(*r)));
    } else {
        for s in &sources {
            let map: Vec<Option<usize>> = schema.iter().map(|(n, _)| s.table.column(n)).collect();
            for r in &s.rows {
                let row: Vec<Value> = map
                    .iter()
                    .map(|i| i.and_then(|i| r.get(i).cloned()).unwrap_or(Value::Null))
                    .collect();
                rows.push(Cow::Owned(row));
            }
        }
    }

    // Compile every stage first: all errors before any work.
    let mut stages = Vec::with_capacity(q.ops.len());
    for op in &q.ops {
        let (stage, next) = compile_stage(op, &schema, now)?;
        stages.push(stage);
        schema = next;
    }
    for stage in &stages {
        rows = stage.apply(rows)?;
    }
    Ok(Output {
        columns: schema,
        rows: rows.into_iter().map(Cow::into_owned).collect(),
    })
}

/// A compiled expression: columns resolved to indices, literals folded.
#[derive(Debug, Clone)]
enum C {
    Col(usize),
    Lit(Value),
    Not(Box<C>),
    Neg(Box<C>),
    IsEmpty(Box<C>, bool),
    IsNull(Box<C>, bool),
    Case(Box<C>, bool),
    And(Box<C>, Box<C>),
    Or(Box<C>, Box<C>),
    Cmp(BinOp, Box<C>, Box<C>),
    Arith(BinOp, Box<C>, Box<C>),
    Str(StrOp, bool, Box<C>, Box<C>),
    In(Box<C>, Vec<Value>, bool, bool),
    Between(Box<C>, Box<C>, Box<C>, bool),
}

struct Ctx<'a> {
    schema: &'a [Column],
    op: &'static str,
    now: DateTime<Utc>,
}

fn type_name(t: Type) -> &'static str {
    t.name()
}

fn compile(e: &Expr, cx: &Ctx<'_>) -> Result<(C, Type), QueryError> {
    let (c, t) = compile_inner(e, cx)?;
    // Fold what does not depend on a row.
    if !matches!(c, C::Lit(_) | C::Col(_)) && is_constant(&c) {
        let v = eval(&c, &[])?;
        return Ok((C::Lit(v), t));
    }
    Ok((c, t))
}

fn is_constant(c: &C) -> bool {
    match c {
        C::Col(_) => false,
        C::Lit(_) => true,
        C::Not(a) | C::Neg(a) | C::IsEmpty(a, _) | C::IsNull(a, _) | C::Case(a, _) => {
            is_constant(a)
        }
        C::And(a, b) | C::Or(a, b) | C::Cmp(_, a, b) | C::Arith(_, a, b) | C::Str(_, _, a, b) => {
            is_constant(a) && is_constant(b)
        }
        C::In(a, _, _, _) => is_constant(a),
        C::Between(a, b, c, _) => is_constant(a) && is_constant(b) && is_constant(c),
    }
}

fn compile_inner(e: &Expr, cx: &Ctx<'_>) -> Result<(C, Type), QueryError> {
    let op = cx.op;
    match e {
        Expr::Column(name) => match cx.schema.iter().position(|(n, _)| n == name) {
            Some(i) => Ok((C::Col(i), cx.schema[i].1)),
            None => Err(QueryError::semantic(if op == "where" {
                format!(
                    "'{op}' operator: Failed to resolve column or scalar expression named '{name}'"
                )
            } else {
                format!("'{op}' operator: Failed to resolve scalar expression named '{name}'")
            })),
        },
        Expr::Lit(v) => Ok((C::Lit(v.clone()), lit_type(v))),
        Expr::Neg(a) => {
            let (a, t) = compile(a, cx)?;
            match t {
                Type::Long | Type::Int | Type::Real | Type::Timespan => {
                    Ok((C::Neg(Box::new(a)), t))
                }
                other => Err(QueryError::semantic(format!(
                    "'{op}' operator: Unary minus is not defined for type '{}'",
                    type_name(other)
                ))),
            }
        }
        Expr::Call(name, args) => compile_call(name, args, cx),
        Expr::Binary(bop, a, b) => compile_binary(*bop, a, b, cx),
        Expr::In {
            lhs,
            list,
            negated,
            case_insensitive,
        } => {
            let (l, t) = compile(lhs, cx)?;
            reject_dynamic(t, "in")?;
            if *case_insensitive && t != Type::String {
                return Err(QueryError::unsupported("'in~' on a non-string column"));
            }
            let mut values = Vec::with_capacity(list.len());
            for item in list {
                let (c, it) = compile(item, cx)?;
                let C::Lit(v) = c else {
                    return Err(QueryError::unsupported(
                        "'in' with a list that is not made of literals",
                    ));
                };
                if !comparable(t, it) {
                    return Err(cannot_compare(t, it));
                }
                values.push(v);
            }
            Ok((
                C::In(Box::new(l), values, *negated, *case_insensitive),
                Type::Bool,
            ))
        }
        Expr::Between {
            lhs,
            low,
            high,
            negated,
        } => {
            let (l, t) = compile(lhs, cx)?;
            let (lo, lt) = compile(low, cx)?;
            let (hi, ht) = compile(high, cx)?;
            let ok = match t {
                Type::Long | Type::Int | Type::Real => lt.is_numeric() && ht.is_numeric(),
                Type::DateTime => {
                    lt == Type::DateTime && matches!(ht, Type::DateTime | Type::Timespan)
                }
                Type::Timespan => lt == Type::Timespan && ht == Type::Timespan,
                _ => false,
            };
            if !ok {
                return Err(if matches!(t, Type::String | Type::Bool | Type::Dynamic) {
                    QueryError::unsupported(format!("'between' on a {} value", type_name(t)))
                } else {
                    cannot_compare(t, if lt != t { lt } else { ht })
                });
            }
            // `between (datetime(x) .. 1h)`: the upper bound is relative to the lower.
            let hi = if t == Type::DateTime && ht == Type::Timespan {
                C::Arith(BinOp::Add, Box::new(lo.clone()), Box::new(hi))
            } else {
                hi
            };
            Ok((
                C::Between(Box::new(l), Box::new(lo), Box::new(hi), *negated),
                Type::Bool,
            ))
        }
    }
}

fn lit_type(v: &Value) -> Type {
    match v {
        Value::Null => Type::Dynamic,
        Value::Bool(_) => Type::Bool,
        Value::Long(_) => Type::Long,
        Value::Real(_) => Type::Real,
        Value::Str(_) => Type::String,
        Value::DateTime(_) => Type::DateTime,
        Value::Timespan(_) => Type::Timespan,
    }
}

fn reject_dynamic(t: Type, what: &str) -> Result<(), QueryError> {
    if t == Type::Dynamic {
        Err(QueryError::unsupported(format!(
            "'{what}' on a dynamic value"
        )))
    } else {
        Ok(())
    }
}

fn comparable(a: Type, b: Type) -> bool {
    a == b || (a.is_numeric() && b.is_numeric())
}

fn cannot_compare(a: Type, b: Type) -> QueryError {
    QueryError::semantic(format!(
        "Cannot compare values of types {} and {}. Try adding explicit casts",
        type_name(a),
        type_name(b)
    ))
}

fn arity(name: &str, args: &[Expr], n: usize, op: &str) -> Result<(), QueryError> {
    if args.len() == n {
        Ok(())
    } else {
        Err(QueryError::semantic(format!(
            "'{op}' operator: Function '{name}' expects {n} argument(s)."
        )))
    }
}

fn compile_call(name: &str, args: &[Expr], cx: &Ctx<'_>) -> Result<(C, Type), QueryError> {
    let op = cx.op;
    if !FUNCTIONS.contains(&name) {
        return Err(QueryError::unsupported(format!("the function '{name}()'")));
    }
    match name {
        "ago" => {
            arity(name, args, 1, op)?;
            let (a, t) = compile(&args[0], cx)?;
            if t != Type::Timespan {
                return Err(QueryError::semantic(format!(
                    "'{op}' operator: Function 'ago' expects a timespan argument, found {}.",
                    type_name(t)
                )));
            }
            Ok((
                C::Arith(
                    BinOp::Sub,
                    Box::new(C::Lit(Value::DateTime(cx.now))),
                    Box::new(a),
                ),
                Type::DateTime,
            ))
        }
        "now" => match args {
            [] => Ok((C::Lit(Value::DateTime(cx.now)), Type::DateTime)),
            [offset] => {
                let (a, t) = compile(offset, cx)?;
                if t != Type::Timespan {
                    return Err(QueryError::semantic(format!(
                        "'{op}' operator: Function 'now' expects a timespan argument, found {}.",
                        type_name(t)
                    )));
                }
                Ok((
                    C::Arith(
                        BinOp::Add,
                        Box::new(C::Lit(Value::DateTime(cx.now))),
                        Box::new(a),
                    ),
                    Type::DateTime,
                ))
            }
            _ => Err(QueryError::semantic(format!(
                "'{op}' operator: Function 'now' expects 0 or 1 argument(s)."
            ))),
        },
        "timespan" | "time" => {
            arity(name, args, 1, op)?;
            match &args[0] {
                Expr::Lit(Value::Timespan(t)) => Ok((C::Lit(Value::Timespan(*t)), Type::Timespan)),
                _ => Err(QueryError::unsupported(format!(
                    "'{name}()' of anything but a timespan literal"
                ))),
            }
        }
        "not" => {
            arity(name, args, 1, op)?;
            let (a, t) = compile(&args[0], cx)?;
            if t != Type::Bool {
                return Err(QueryError::semantic(format!(
                    "'{op}' operator: Function 'not' expects a bool argument, found {}.",
                    type_name(t)
                )));
            }
            Ok((C::Not(Box::new(a)), Type::Bool))
        }
        "isempty" | "isnotempty" | "isnull" | "isnotnull" => {
            arity(name, args, 1, op)?;
            let (a, t) = compile(&args[0], cx)?;
            reject_dynamic(t, name)?;
            let c = match name {
                "isempty" => C::IsEmpty(Box::new(a), false),
                "isnotempty" => C::IsEmpty(Box::new(a), true),
                "isnull" => C::IsNull(Box::new(a), false),
                _ => C::IsNull(Box::new(a), true),
            };
            Ok((c, Type::Bool))
        }
        "tolower" | "toupper" => {
            arity(name, args, 1, op)?;
            let (a, t) = compile(&args[0], cx)?;
            if t != Type::String {
                return Err(QueryError::unsupported(format!(
                    "'{name}()' of a {} value",
                    type_name(t)
                )));
            }
            Ok((C::Case(Box::new(a), name == "toupper"), Type::String))
        }
        other => Err(QueryError::unsupported(format!("the function '{other}()'"))),
    }
}

fn compile_binary(bop: BinOp, a: &Expr, b: &Expr, cx: &Ctx<'_>) -> Result<(C, Type), QueryError> {
    let (l, lt) = compile(a, cx)?;
    let (r, rt) = compile(b, cx)?;
    let op = cx.op;
    let (l, r) = (Box::new(l), Box::new(r));
    match bop {
        BinOp::And | BinOp::Or => {
            if lt != Type::Bool || rt != Type::Bool {
                return Err(QueryError::semantic(format!(
                    "'{op}' operator: The arguments of '{}' must be of type bool.",
                    if bop == BinOp::And { "and" } else { "or" }
                )));
            }
            Ok((
                if bop == BinOp::And {
                    C::And(l, r)
                } else {
                    C::Or(l, r)
                },
                Type::Bool,
            ))
        }
        BinOp::Eq | BinOp::Ne => {
            reject_dynamic(lt, "==")?;
            reject_dynamic(rt, "==")?;
            if !comparable(lt, rt) {
                return Err(cannot_compare(lt, rt));
            }
            Ok((C::Cmp(bop, l, r), Type::Bool))
        }
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            if matches!(lt, Type::String | Type::Bool | Type::Dynamic) {
                return Err(QueryError::unsupported(format!(
                    "ordering comparisons of {} values",
                    type_name(lt)
                )));
            }
            if !comparable(lt, rt) {
                return Err(cannot_compare(lt, rt));
            }
            Ok((C::Cmp(bop, l, r), Type::Bool))
        }
        BinOp::EqCi | BinOp::NeCi | BinOp::Str(..) => {
            if lt != Type::String || rt != Type::String {
                return Err(QueryError::unsupported(format!(
                    "string operators on {} and {} values",
                    type_name(lt),
                    type_name(rt)
                )));
            }
            if let (BinOp::Str(StrOp::Has | StrOp::HasCs, _), C::Lit(Value::Str(term))) =
                (bop, r.as_ref())
                && (term.is_empty() || !term.chars().all(|c| c.is_ascii_alphanumeric()))
            {
                return Err(QueryError::unsupported(
                    "'has' with a term that is empty or not only ASCII letters and digits (a phrase)",
                ));
            }
            if let BinOp::Str(s, negated) = bop {
                if !matches!(r.as_ref(), C::Lit(_)) && matches!(s, StrOp::Has | StrOp::HasCs) {
                    return Err(QueryError::unsupported("'has' with a non-literal term"));
                }
                return Ok((C::Str(s, negated, l, r), Type::Bool));
            }
            Ok((C::Cmp(bop, l, r), Type::Bool))
        }
        BinOp::Add | BinOp::Sub => {
            let t = match (lt, rt, bop) {
                (Type::DateTime, Type::Timespan, _) => Type::DateTime,
                (Type::Timespan, Type::DateTime, BinOp::Add) => Type::DateTime,
                (Type::DateTime, Type::DateTime, BinOp::Sub) => Type::Timespan,
                (Type::Timespan, Type::Timespan, _) => Type::Timespan,
                (Type::Long | Type::Int, Type::Long | Type::Int, _) => Type::Long,
                (a, b, _) if a.is_numeric() && b.is_numeric() => Type::Real,
                (a, b, _) => {
                    return Err(QueryError::semantic(format!(
                        "'{op}' operator: Operator '{}' is not defined for types {} and {}.",
                        if bop == BinOp::Add { "+" } else { "-" },
                        type_name(a),
                        type_name(b)
                    )));
                }
            };
            Ok((C::Arith(bop, l, r), t))
        }
    }
}

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn bool_or_null(b: Option<bool>) -> Value {
    b.map(Value::Bool).unwrap_or(Value::Null)
}

/// Orders two values of comparable types; `None` when either is null.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Long(x), Value::Long(y)) => Some(x.cmp(y)),
        (Value::Long(x), Value::Real(y)) => (*x as f64).partial_cmp(y),
        (Value::Real(x), Value::Long(y)) => x.partial_cmp(&(*y as f64)),
        (Value::Real(x), Value::Real(y)) => x.partial_cmp(y),
        (Value::DateTime(x), Value::DateTime(y)) => Some(x.cmp(y)),
        (Value::Timespan(x), Value::Timespan(y)) => Some(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn is_term_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// Kusto's `has`: the term occurs in the text with a term boundary (a character
/// that is not an ASCII letter or digit, or the text's end) on both sides. An
/// underscore or a non-ASCII character at a boundary is where the twin is not sure
/// how Kusto's indexer splits terms, so it refuses instead of answering.
fn has_term(text: &str, term: &str, case_sensitive: bool) -> Result<bool, QueryError> {
    let (t, needle) = if case_sensitive {
        (Cow::Borrowed(text), Cow::Borrowed(term))
    } else {
        (
            Cow::Owned(text.to_ascii_lowercase()),
            Cow::Owned(term.to_ascii_lowercase()),
        )
    };
    let mut from = 0;
    while let Some(found) = t[from..].find(needle.as_ref()) {
        let start = from + found;
        let end = start + needle.len();
        let before = t[..start].chars().next_back();
        let after = t[end..].chars().next();
        let ambiguous = |c: Option<char>| c.is_some_and(|c| c == '_' || !c.is_ascii());
        if ambiguous(before) || ambiguous(after) {
            return Err(QueryError::unsupported(
                "'has' next to an underscore or a non-ASCII character in the data",
            ));
        }
        if !before.is_some_and(is_term_char) && !after.is_some_and(is_term_char) {
            return Ok(true);
        }
        from = start + t[start..].chars().next().map(char::len_utf8).unwrap_or(1);
    }
    Ok(false)
}

fn str_op(s: StrOp, text: &str, arg: &str) -> Result<bool, QueryError> {
    let ci = |x: &str| x.to_lowercase();
    Ok(match s {
        StrOp::Has => has_term(text, arg, false)?,
        StrOp::HasCs => has_term(text, arg, true)?,
        StrOp::Contains => ci(text).contains(&ci(arg)),
        StrOp::ContainsCs => text.contains(arg),
        StrOp::StartsWith => ci(text).starts_with(&ci(arg)),
        StrOp::StartsWithCs => text.starts_with(arg),
        StrOp::EndsWith => ci(text).ends_with(&ci(arg)),
        StrOp::EndsWithCs => text.ends_with(arg),
    })
}

fn arith(bop: BinOp, a: Value, b: Value) -> Result<Value, QueryError> {
    let overflow = || QueryError::unsupported("arithmetic that overflows");
    let add = bop == BinOp::Add;
    Ok(match (a, b) {
        (Value::Null, _) | (_, Value::Null) => Value::Null,
        (Value::DateTime(t), Value::Timespan(d)) | (Value::Timespan(d), Value::DateTime(t)) => {
            let delta = TimeDelta::microseconds(d / 10) + TimeDelta::nanoseconds((d % 10) * 100);
            let r = if add {
                t.checked_add_signed(delta)
            } else {
                t.checked_sub_signed(delta)
            };
            Value::DateTime(r.ok_or_else(overflow)?)
        }
        (Value::DateTime(x), Value::DateTime(y)) => {
            let d = x - y;
            let ticks = d
                .num_microseconds()
                .and_then(|us| us.checked_mul(10))
                .ok_or_else(overflow)?;
            Value::Timespan(ticks + i64::from(d.subsec_nanos() % 1000 / 100))
        }
        (Value::Timespan(x), Value::Timespan(y)) => Value::Timespan(
            if add {
                x.checked_add(y)
            } else {
                x.checked_sub(y)
            }
            .ok_or_else(overflow)?,
        ),
        (Value::Long(x), Value::Long(y)) => Value::Long(
            if add {
                x.checked_add(y)
            } else {
                x.checked_sub(y)
            }
            .ok_or_else(overflow)?,
        ),
        (x, y) => {
            let f = |v: &Value| match v {
                Value::Long(n) => Some(*n as f64),
                Value::Real(f) => Some(*f),
                _ => None,
            };
            match (f(&x), f(&y)) {
                (Some(p), Some(q)) => Value::Real(if add { p + q } else { p - q }),
                _ => return Err(QueryError::unsupported("arithmetic on these types")),
            }
        }
    })
}

fn eval(c: &C, row: &[Value]) -> Result<Value, QueryError> {
    Ok(match c {
        C::Col(i) => row.get(*i).cloned().unwrap_or(Value::Null),
        C::Lit(v) => v.clone(),
        C::Not(a) => bool_or_null(truth(&eval(a, row)?).map(|b| !b)),
        C::Neg(a) => match eval(a, row)? {
            Value::Long(n) => Value::Long(
                n.checked_neg()
                    .ok_or_else(|| QueryError::unsupported("arithmetic that overflows"))?,
            ),
            Value::Real(f) => Value::Real(-f),
            Value::Timespan(t) => Value::Timespan(-t),
            _ => Value::Null,
        },
        C::IsEmpty(a, negated) => {
            let empty = match eval(a, row)? {
                Value::Null => true,
                Value::Str(s) => s.is_empty(),
                _ => false,
            };
            Value::Bool(empty != *negated)
        }
        C::IsNull(a, negated) => Value::Bool(matches!(eval(a, row)?, Value::Null) != *negated),
        C::Case(a, upper) => match eval(a, row)? {
            Value::Str(s) if *upper => Value::Str(s.to_uppercase()),
            Value::Str(s) => Value::Str(s.to_lowercase()),
            other => other,
        },
        C::And(a, b) => {
            let x = truth(&eval(a, row)?);
            if x == Some(false) {
                return Ok(Value::Bool(false));
            }
            match (x, truth(&eval(b, row)?)) {
                (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            }
        }
        C::Or(a, b) => {
            let x = truth(&eval(a, row)?);
            if x == Some(true) {
                return Ok(Value::Bool(true));
            }
            match (x, truth(&eval(b, row)?)) {
                (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            }
        }
        C::Cmp(bop, a, b) => {
            let (x, y) = (eval(a, row)?, eval(b, row)?);
            match bop {
                BinOp::EqCi | BinOp::NeCi => match (&x, &y) {
                    (Value::Str(p), Value::Str(q)) => {
                        Value::Bool((p.to_lowercase() == q.to_lowercase()) == (*bop == BinOp::EqCi))
                    }
                    _ => Value::Null,
                },
                _ => bool_or_null(order(&x, &y).map(|o| match bop {
                    BinOp::Eq => o == Ordering::Equal,
                    BinOp::Ne => o != Ordering::Equal,
                    BinOp::Lt => o == Ordering::Less,
                    BinOp::Le => o != Ordering::Greater,
                    BinOp::Gt => o == Ordering::Greater,
                    _ => o != Ordering::Less,
                })),
            }
        }
        C::Arith(bop, a, b) => arith(*bop, eval(a, row)?, eval(b, row)?)?,
        C::Str(s, negated, a, b) => match (eval(a, row)?, eval(b, row)?) {
            (Value::Str(text), Value::Str(arg)) => {
                Value::Bool(str_op(*s, &text, &arg)? != *negated)
            }
            _ => Value::Null,
        },
        C::In(a, list, negated, ci) => {
            let x = eval(a, row)?;
            if x == Value::Null {
                return Ok(Value::Null);
            }
            let found = list.iter().any(|v| match (&x, v) {
                (Value::Str(p), Value::Str(q)) if *ci => p.to_lowercase() == q.to_lowercase(),
                _ => order(&x, v) == Some(Ordering::Equal),
            });
            Value::Bool(found != *negated)
        }
        C::Between(a, lo, hi, negated) => {
            let (x, l, h) = (eval(a, row)?, eval(lo, row)?, eval(hi, row)?);
            match (order(&x, &l), order(&x, &h)) {
                (Some(p), Some(q)) => {
                    Value::Bool((p != Ordering::Less && q != Ordering::Greater) != *negated)
                }
                _ => Value::Null,
            }
        }
    })
}

/// One compiled operator.
enum Stage {
    Where(C),
    Project(Vec<C>),
    Take(usize),
    Summarize {
        keys: Vec<C>,
        aggs: Vec<(AggFunc, Option<C>)>,
    },
    Sort(Vec<(C, bool, bool)>),
    Count,
}

fn compile_stage(
    op: &Operator,
    schema: &[Column],
    now: DateTime<Utc>,
) -> Result<(Stage, Vec<Column>), QueryError> {
    let cx = Ctx {
        schema,
        op: op.name(),
        now,
    };
    let unique = |cols: &[Column]| -> Result<(), QueryError> {
        for (i, (n, _)) in cols.iter().enumerate() {
            if cols[..i].iter().any(|(m, _)| m == n) {
                return Err(QueryError::unsupported(format!(
                    "a '{}' that names the column '{n}' twice",
                    cx.op
                )));
            }
        }
        Ok(())
    };
    match op {
        Operator::Where(e) => {
            let (c, t) = compile(e, &cx)?;
            if t != Type::Bool {
                return Err(QueryError::semantic(format!(
                    "'where' operator: The predicate must be of type bool, found {}.",
                    type_name(t)
                )));
            }
            Ok((Stage::Where(c), schema.to_vec()))
        }
        Operator::Project(items) => {
            let mut cs = Vec::new();
            let mut cols = Vec::new();
            for (name, e) in items {
                let (c, t) = compile(e, &cx)?;
                cs.push(c);
                cols.push((name.clone(), t));
            }
            unique(&cols)?;
            Ok((Stage::Project(cs), cols))
        }
        Operator::Take(n) => Ok((
            Stage::Take(usize::try_from(*n).unwrap_or(usize::MAX)),
            schema.to_vec(),
        )),
        Operator::Count => Ok((Stage::Count, vec![("Count".into(), Type::Long)])),
        Operator::Sort(keys) => {
            let keys = compile_sort(keys, &cx)?;
            Ok((Stage::Sort(keys), schema.to_vec()))
        }
        Operator::Top(..) => Err(QueryError::unsupported("'top' (internal)")),
        Operator::Summarize { aggs, by } => {
            let mut cols = Vec::new();
            let mut keys = Vec::new();
            for (name, e) in by {
                let (c, t) = compile(e, &cx)?;
                reject_dynamic(t, "summarize by")?;
                keys.push(c);
                cols.push((name.clone(), t));
            }
            let mut compiled = Vec::new();
            for Agg { name, func, arg } in aggs {
                let (arg_c, arg_t) = match arg {
                    Some(a) => {
                        let (c, t) = compile(a, &cx)?;
                        (Some(c), Some(t))
                    }
                    None => (None, None),
                };
                let ty = match (func, arg_t) {
                    (AggFunc::Count, _) => Type::Long,
                    (AggFunc::CountIf, Some(Type::Bool)) => Type::Long,
                    (AggFunc::CountIf, Some(t)) => {
                        return Err(QueryError::semantic(format!(
                            "'summarize' operator: Function 'countif' expects a bool argument, found {}.",
                            type_name(t)
                        )));
                    }
                    (
                        AggFunc::Min | AggFunc::Max,
                        Some(
                            t @ (Type::Long
                            | Type::Int
                            | Type::Real
                            | Type::DateTime
                            | Type::Timespan),
                        ),
                    ) => t,
                    (AggFunc::Min | AggFunc::Max, Some(t)) => {
                        return Err(QueryError::unsupported(format!(
                            "min()/max() of {} values",
                            type_name(t)
                        )));
                    }
                    (_, None) => Type::Long,
                };
                let default = match (func, arg) {
                    (AggFunc::Count, _) => "count_".to_string(),
                    (AggFunc::CountIf, _) => "countif_".to_string(),
                    (AggFunc::Min, Some(Expr::Column(c))) => format!("min_{c}"),
                    (AggFunc::Max, Some(Expr::Column(c))) => format!("max_{c}"),
                    _ => {
                        return Err(QueryError::unsupported(
                            "an unnamed min()/max() of an expression (name it: Name = min(...))",
                        ));
                    }
                };
                cols.push((name.clone().unwrap_or(default), ty));
                compiled.push((*func, arg_c));
            }
            unique(&cols)?;
            Ok((
                Stage::Summarize {
                    keys,
                    aggs: compiled,
                },
                cols,
            ))
        }
    }
}

fn compile_sort(keys: &[SortKey], cx: &Ctx<'_>) -> Result<Vec<(C, bool, bool)>, QueryError> {
    let mut out = Vec::new();
    for k in keys {
        let (c, t) = compile(&k.expr, cx)?;
        if matches!(t, Type::String | Type::Dynamic | Type::Bool) {
            return Err(QueryError::unsupported(format!(
                "sorting by a {} value",
                type_name(t)
            )));
        }
        out.push((c, k.descending, k.nulls_first));
    }
    Ok(out)
}

/// A group key cell, hashable: values are compared exactly as `==` does for the
/// types a key can have.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Null,
    Bool(bool),
    Long(i64),
    Real(u64),
    Str(String),
    DateTime(i64, u32),
    Timespan(i64),
}

fn key_of(v: &Value) -> Key {
    match v {
        Value::Null => Key::Null,
        Value::Bool(b) => Key::Bool(*b),
        Value::Long(n) => Key::Long(*n),
        // -0.0 and 0.0 are one group.
        Value::Real(f) => Key::Real(if *f == 0.0 { 0 } else { f.to_bits() }),
        Value::Str(s) => Key::Str(s.clone()),
        Value::DateTime(t) => Key::DateTime(t.timestamp(), t.timestamp_subsec_nanos()),
        Value::Timespan(t) => Key::Timespan(*t),
    }
}

impl Stage {
    fn apply<'a>(&self, rows: Vec<Cow<'a, [Value]>>) -> Result<Vec<Cow<'a, [Value]>>, QueryError> {
        Ok(match self {
            Stage::Where(c) => {
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    if eval(c, &r)? == Value::Bool(true) {
                        out.push(r);
                    }
                }
                out
            }
            Stage::Project(cs) => {
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let mut row = Vec::with_capacity(cs.len());
                    for c in cs {
                        row.push(eval(c, &r)?);
                    }
                    out.push(Cow::Owned(row));
                }
                out
            }
            Stage::Take(n) => rows.into_iter().take(*n).collect(),
            Stage::Count => vec![Cow::Owned(vec![Value::Long(rows.len() as i64)])],
            Stage::Sort(keys) => {
                let mut keyed = Vec::with_capacity(rows.len());
                for r in rows {
                    let mut k = Vec::with_capacity(keys.len());
                    for (c, _, _) in keys {
                        k.push(eval(c, &r)?);
                    }
                    keyed.push((k, r));
                }
                keyed.sort_by(|(a, _), (b, _)| {
                    for (i, (_, desc, nulls_first)) in keys.iter().enumerate() {
                        let o = match (&a[i], &b[i]) {
                            (Value::Null, Value::Null) => Ordering::Equal,
                            (Value::Null, _) => {
                                if *nulls_first {
                                    Ordering::Less
                                } else {
                                    Ordering::Greater
                                }
                            }
                            (_, Value::Null) => {
                                if *nulls_first {
                                    Ordering::Greater
                                } else {
                                    Ordering::Less
                                }
                            }
                            (x, y) => {
                                let o = order(x, y).unwrap_or(Ordering::Equal);
                                if *desc { o.reverse() } else { o }
                            }
                        };
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    Ordering::Equal
                });
                keyed.into_iter().map(|(_, r)| r).collect()
            }
            Stage::Summarize { keys, aggs } => summarize(keys, aggs, rows)?,
        })
    }
}

#[derive(Debug, Clone)]
enum Acc {
    Count(i64),
    Extreme(Option<Value>, bool),
}

fn summarize<'a>(
    keys: &[C],
    aggs: &[(AggFunc, Option<C>)],
    rows: Vec<Cow<'a, [Value]>>,
) -> Result<Vec<Cow<'a, [Value]>>, QueryError> {
    let fresh = || -> Vec<Acc> {
        aggs.iter()
            .map(|(f, _)| match f {
                AggFunc::Count | AggFunc::CountIf => Acc::Count(0),
                AggFunc::Min => Acc::Extreme(None, false),
                AggFunc::Max => Acc::Extreme(None, true),
            })
            .collect()
    };
    let mut index: HashMap<Vec<Key>, usize> = HashMap::new();
    let mut groups: Vec<(Vec<Value>, Vec<Acc>)> = Vec::new();
    // Without `by`, one row even for no input (count_ = 0), as Kusto answers.
    if keys.is_empty() {
        groups.push((Vec::new(), fresh()));
        index.insert(Vec::new(), 0);
    }
    for r in &rows {
        let mut kv = Vec::with_capacity(keys.len());
        for c in keys {
            kv.push(eval(c, r)?);
        }
        let k: Vec<Key> = kv.iter().map(key_of).collect();
        let g = match index.get(&k) {
            Some(&g) => g,
            None => {
                groups.push((kv, fresh()));
                index.insert(k, groups.len() - 1);
                groups.len() - 1
            }
        };
        for (i, (f, arg)) in aggs.iter().enumerate() {
            let acc = &mut groups[g].1[i];
            match (f, acc) {
                (AggFunc::Count, Acc::Count(n)) => *n += 1,
                (AggFunc::CountIf, Acc::Count(n)) => {
                    if let Some(a) = arg
                        && eval(a, r)? == Value::Bool(true)
                    {
                        *n += 1;
                    }
                }
                (_, Acc::Extreme(best, is_max)) => {
                    let Some(a) = arg else { continue };
                    let v = eval(a, r)?;
                    if v == Value::Null {
                        continue;
                    }
                    let better = match best {
                        None => true,
                        Some(b) => match order(&v, b) {
                            Some(Ordering::Greater) => *is_max,
                            Some(Ordering::Less) => !*is_max,
                            _ => false,
                        },
                    };
                    if better {
                        *best = Some(v);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(groups
        .into_iter()
        .map(|(mut kv, accs)| {
            kv.extend(accs.into_iter().map(|a| match a {
                Acc::Count(n) => Value::Long(n),
                Acc::Extreme(v, _) => v.unwrap_or(Value::Null),
            }));
            Cow::Owned(kv)
        })
        .collect())
}

/// `top N by key` is `sort by key | take N`.
pub(super) fn expand_top(q: &mut Query) {
    let ops = std::mem::take(&mut q.ops);
    for op in ops {
        match op {
            Operator::Top(n, key) => {
                q.ops.push(Operator::Sort(vec![key]));
                q.ops.push(Operator::Take(n));
            }
            other => q.ops.push(other),
        }
    }
}
