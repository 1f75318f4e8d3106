//! Recursive-descent parser of the subset. Valid KQL outside the subset (another
//! tabular operator, `let`, a function the twin does not know) is recognised and
//! refused as unsupported; anything else that does not parse is a syntax error at
//! the token where reading stopped.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::lex::{Tok, Token, lex};
use super::{Agg, AggFunc, BinOp, Expr, Operator, Query, QueryError, SortKey, StrOp, Value};

/// Tabular operators of KQL that the subset does not evaluate.
const OTHER_OPERATORS: &[&str] = &[
    "as",
    "consume",
    "distinct",
    "evaluate",
    "extend",
    "facet",
    "find",
    "fork",
    "getschema",
    "invoke",
    "join",
    "lookup",
    "make-series",
    "mv-apply",
    "mv-expand",
    "parse",
    "parse-where",
    "parse-kv",
    "partition",
    "project-away",
    "project-keep",
    "project-rename",
    "project-reorder",
    "reduce",
    "render",
    "sample",
    "sample-distinct",
    "scan",
    "search",
    "serialize",
    "top-hitters",
    "top-nested",
    "union",
    "macro-expand",
    "graph-match",
];

/// Statements or sources that are KQL but not a table reference.
const OTHER_SOURCES: &[&str] = &[
    "let",
    "print",
    "range",
    "datatable",
    "externaldata",
    "search",
    "find",
    "set",
    "declare",
    "alias",
    "pattern",
    "restrict",
    "evaluate",
    "materialize",
];

/// Functions the subset knows; `parse` accepts any other call and the compiler
/// refuses it as unsupported (KQL has hundreds; the twin models these).
pub(super) const FUNCTIONS: &[&str] = &[
    "ago",
    "now",
    "not",
    "isempty",
    "isnotempty",
    "isnull",
    "isnotnull",
    "tolower",
    "toupper",
    "timespan",
    "time",
];

struct Parser {
    toks: Vec<Token>,
    i: usize,
}

pub(super) fn parse(src: &str) -> Result<Query, QueryError> {
    let toks = lex(src)?;
    let mut p = Parser { toks, i: 0 };
    let q = p.query()?;
    Ok(q)
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.i + n).map(|t| &t.tok)
    }

    /// A syntax error at the current token (or at the end of the text).
    fn error_here(&self) -> QueryError {
        match self.toks.get(self.i) {
            Some(t) => QueryError::syntax(t.line, t.pos, &t.text),
            None => {
                let (line, pos) = self
                    .toks
                    .last()
                    .map(|t| (t.line, t.pos + t.text.chars().count()))
                    .unwrap_or((1, 0));
                QueryError::syntax(line, pos, "<EOF>")
            }
        }
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.tok.clone());
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == s)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(x)) if x == w)
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), QueryError> {
        if self.is_sym(s) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error_here())
        }
    }

    fn expect_word(&mut self, w: &str) -> Result<(), QueryError> {
        if self.is_word(w) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error_here())
        }
    }

    fn ident(&mut self) -> Result<String, QueryError> {
        match self.peek() {
            Some(Tok::Ident(w)) => {
                let w = w.clone();
                self.i += 1;
                Ok(w)
            }
            // `['Column Name']`: a column whose name needs quoting.
            Some(Tok::Sym("[")) => {
                self.i += 1;
                let name = match self.next() {
                    Some(Tok::Str(s)) => s,
                    _ => {
                        self.i -= 1;
                        return Err(self.error_here());
                    }
                };
                self.expect_sym("]")?;
                Ok(name)
            }
            _ => Err(self.error_here()),
        }
    }

    fn query(&mut self) -> Result<Query, QueryError> {
        let tables = self.source()?;
        let mut ops = Vec::new();
        loop {
            match self.peek() {
                None => break,
                Some(Tok::Sym(";")) => {
                    self.i += 1;
                    if self.peek().is_some() {
                        return Err(QueryError::unsupported(
                            "several statements separated by ';'",
                        ));
                    }
                    break;
                }
                Some(Tok::Sym("|")) => {
                    self.i += 1;
                    ops.push(self.operator()?);
                }
                Some(_) => return Err(self.error_here()),
            }
        }
        Ok(Query { tables, ops })
    }

    fn source(&mut self) -> Result<Vec<String>, QueryError> {
        let word = match self.peek() {
            Some(Tok::Ident(w)) => w.clone(),
            Some(Tok::Sym("[")) => return Ok(vec![self.ident()?]),
            _ => return Err(self.error_here()),
        };
        if word == "union" {
            self.i += 1;
            // `union kind=outer withsource=T ...` and wildcards are outside the subset.
            if matches!(self.peek_at(1), Some(Tok::Sym("="))) || self.is_sym("*") {
                return Err(QueryError::unsupported("union with options or wildcards"));
            }
            let mut tables = vec![self.table_name()?];
            while self.is_sym(",") {
                self.i += 1;
                tables.push(self.table_name()?);
            }
            return Ok(tables);
        }
        if OTHER_SOURCES.contains(&word.as_str()) {
            return Err(QueryError::unsupported(format!("'{word}' statements")));
        }
        // `Table(...)`, `workspace("...").Table`, `app(...)`: functions as sources.
        let name = self.table_name()?;
        if self.is_sym("(") || self.is_sym(".") {
            return Err(QueryError::unsupported(format!(
                "'{name}' as a function or cross-resource reference"
            )));
        }
        Ok(vec![name])
    }

    fn table_name(&mut self) -> Result<String, QueryError> {
        match self.peek() {
            Some(Tok::Ident(w)) if w.contains('-') => Err(self.error_here()),
            _ => self.ident(),
        }
    }

    fn operator(&mut self) -> Result<Operator, QueryError> {
        let word = match self.peek() {
            Some(Tok::Ident(w)) => w.clone(),
            _ => return Err(self.error_here()),
        };
        self.i += 1;
        match word.as_str() {
            "where" | "filter" => Ok(Operator::Where(self.expr()?)),
            "project" => {
                let mut items = vec![self.named_expr()?];
                while self.is_sym(",") {
                    self.i += 1;
                    items.push(self.named_expr()?);
                }
                Ok(Operator::Project(items))
            }
            "take" | "limit" => Ok(Operator::Take(self.count_literal()?)),
            "summarize" => self.summarize(),
            "sort" | "order" => {
                self.expect_word("by")?;
                let mut keys = vec![self.sort_key()?];
                while self.is_sym(",") {
                    self.i += 1;
                    keys.push(self.sort_key()?);
                }
                Ok(Operator::Sort(keys))
            }
            "top" => {
                let n = self.count_literal()?;
                self.expect_word("by")?;
                let key = self.sort_key()?;
                if self.is_sym(",") {
                    return Err(QueryError::unsupported("'top' by several columns"));
                }
                Ok(Operator::Top(n, key))
            }
            "count" => Ok(Operator::Count),
            w if OTHER_OPERATORS.contains(&w) => {
                Err(QueryError::unsupported(format!("the '{w}' operator")))
            }
            _ => {
                self.i -= 1;
                Err(self.error_here())
            }
        }
    }

    fn count_literal(&mut self) -> Result<u64, QueryError> {
        match self.peek() {
            Some(Tok::Long(n)) if *n >= 0 => {
                let n = *n as u64;
                self.i += 1;
                Ok(n)
            }
            Some(Tok::Long(_)) | Some(Tok::Real(_)) | Some(Tok::Sym("-")) => Err(
                QueryError::unsupported("a row count that is not a non-negative integer literal"),
            ),
            Some(Tok::Ident(_)) => Err(QueryError::unsupported(
                "a row count given by an expression",
            )),
            _ => Err(self.error_here()),
        }
    }

    /// `Name = expr` or an expression named after its column.
    fn named_expr(&mut self) -> Result<(String, Expr), QueryError> {
        if matches!(self.peek_at(1), Some(Tok::Sym("=")))
            && matches!(self.peek(), Some(Tok::Ident(_)) | Some(Tok::Sym("[")))
        {
            let name = self.ident()?;
            self.expect_sym("=")?;
            return Ok((name, self.expr()?));
        }
        let e = self.expr()?;
        match &e {
            Expr::Column(c) => Ok((c.clone(), e)),
            _ => Err(QueryError::unsupported(
                "an unnamed computed column (name it: Name = expression)",
            )),
        }
    }

    fn summarize(&mut self) -> Result<Operator, QueryError> {
        let mut aggs = Vec::new();
        if !self.is_word("by") {
            aggs.push(self.agg()?);
            while self.is_sym(",") {
                self.i += 1;
                aggs.push(self.agg()?);
            }
        }
        let mut by = Vec::new();
        if self.is_word("by") {
            self.i += 1;
            by.push(self.named_expr()?);
            while self.is_sym(",") {
                self.i += 1;
                by.push(self.named_expr()?);
            }
        }
        if aggs.is_empty() && by.is_empty() {
            return Err(self.error_here());
        }
        Ok(Operator::Summarize { aggs, by })
    }

    fn agg(&mut self) -> Result<Agg, QueryError> {
        let name = if matches!(self.peek_at(1), Some(Tok::Sym("="))) {
            let n = self.ident()?;
            self.expect_sym("=")?;
            Some(n)
        } else {
            None
        };
        let func_name = match self.peek() {
            Some(Tok::Ident(w)) => w.clone(),
            _ => return Err(self.error_here()),
        };
        if !matches!(self.peek_at(1), Some(Tok::Sym("("))) {
            return Err(QueryError::unsupported(
                "a summarize item that is not an aggregation call",
            ));
        }
        self.i += 2;
        let func = match func_name.as_str() {
            "count" => AggFunc::Count,
            "countif" => AggFunc::CountIf,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            other => {
                return Err(QueryError::unsupported(format!(
                    "the aggregation '{other}()'"
                )));
            }
        };
        let arg = if self.is_sym(")") {
            None
        } else {
            Some(self.expr()?)
        };
        if self.is_sym(",") {
            return Err(QueryError::unsupported(format!(
                "'{func_name}()' with several arguments"
            )));
        }
        self.expect_sym(")")?;
        match (func, &arg) {
            (AggFunc::Count, None) => {}
            (AggFunc::Count, Some(_)) => {
                return Err(QueryError::unsupported("'count()' with an argument"));
            }
            (_, None) => {
                return Err(QueryError::semantic(format!(
                    "summarize operator: Function '{func_name}' expects 1 argument(s)."
                )));
            }
            _ => {}
        }
        Ok(Agg { name, func, arg })
    }

    fn sort_key(&mut self) -> Result<SortKey, QueryError> {
        let expr = self.expr()?;
        let mut descending = true;
        if self.is_word("asc") {
            descending = false;
            self.i += 1;
        } else if self.is_word("desc") {
            self.i += 1;
        }
        // Kusto's defaults: nulls last when descending, first when ascending.
        let mut nulls_first = !descending;
        if self.is_word("nulls") {
            self.i += 1;
            if self.is_word("first") {
                nulls_first = true;
            } else if self.is_word("last") {
                nulls_first = false;
            } else {
                return Err(self.error_here());
            }
            self.i += 1;
        }
        Ok(SortKey {
            expr,
            descending,
            nulls_first,
        })
    }

    fn expr(&mut self) -> Result<Expr, QueryError> {
        let mut lhs = self.and_expr()?;
        while self.is_word("or") {
            self.i += 1;
            let rhs = self.and_expr()?;
            lhs = Expr::Binary(BinOp::Or, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn and_expr(&mut self) -> Result<Expr, QueryError> {
        let mut lhs = self.comparison()?;
        while self.is_word("and") {
            self.i += 1;
            let rhs = self.comparison()?;
            lhs = Expr::Binary(BinOp::And, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn comparison(&mut self) -> Result<Expr, QueryError> {
        let lhs = self.additive()?;
        let op = match self.peek() {
            Some(Tok::Sym("==")) => Some(BinOp::Eq),
            Some(Tok::Sym("!=")) => Some(BinOp::Ne),
            Some(Tok::Sym("<")) => Some(BinOp::Lt),
            Some(Tok::Sym("<=")) => Some(BinOp::Le),
            Some(Tok::Sym(">")) => Some(BinOp::Gt),
            Some(Tok::Sym(">=")) => Some(BinOp::Ge),
            Some(Tok::Sym("=~")) => Some(BinOp::EqCi),
            Some(Tok::Sym("!~")) => Some(BinOp::NeCi),
            Some(Tok::Ident(w)) => StrOp::parse(w).map(|s| BinOp::Str(s, false)),
            Some(Tok::NotWord(w)) => StrOp::parse(w).map(|s| BinOp::Str(s, true)),
            _ => None,
        };
        if let Some(op) = op {
            self.i += 1;
            let rhs = self.additive()?;
            return Ok(Expr::Binary(op, Box::new(lhs), Box::new(rhs)));
        }
        let negated = match self.peek() {
            Some(Tok::Ident(w)) if w == "in" || w == "between" => false,
            Some(Tok::NotWord(w)) if w == "in" || w == "between" => true,
            Some(Tok::Ident(w)) | Some(Tok::NotWord(w)) if is_other_string_operator(w) => {
                return Err(QueryError::unsupported(format!("the '{w}' operator")));
            }
            _ => return Ok(lhs),
        };
        let word = match self.next() {
            Some(Tok::Ident(w)) | Some(Tok::NotWord(w)) => w,
            _ => return Err(self.error_here()),
        };
        if word == "in" {
            let case_insensitive = self.is_sym("~");
            if case_insensitive {
                self.i += 1;
            }
            self.expect_sym("(")?;
            let mut list = vec![self.additive()?];
            while self.is_sym(",") {
                self.i += 1;
                list.push(self.additive()?);
            }
            self.expect_sym(")")?;
            return Ok(Expr::In {
                lhs: Box::new(lhs),
                list,
                negated,
                case_insensitive,
            });
        }
        self.expect_sym("(")?;
        let low = self.additive()?;
        self.expect_sym("..")?;
        let high = self.additive()?;
        self.expect_sym(")")?;
        Ok(Expr::Between {
            lhs: Box::new(lhs),
            low: Box::new(low),
            high: Box::new(high),
            negated,
        })
    }

    fn additive(&mut self) -> Result<Expr, QueryError> {
        let mut lhs = self.unary()?;
        loop {
            let op = if self.is_sym("+") {
                BinOp::Add
            } else if self.is_sym("-") {
                BinOp::Sub
            } else if self.is_sym("*") || self.is_sym("/") || self.is_sym("%") {
                return Err(QueryError::unsupported("'*', '/' and '%' arithmetic"));
            } else {
                return Ok(lhs);
            };
            self.i += 1;
            let rhs = self.unary()?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        if self.is_sym("-") {
            self.i += 1;
            return Ok(Expr::Neg(Box::new(self.primary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        let (line, pos, text) = match self.toks.get(self.i) {
            Some(t) => (t.line, t.pos, t.text.clone()),
            None => return Err(self.error_here()),
        };
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.i += 1;
                Ok(Expr::Lit(Value::Str(s)))
            }
            Some(Tok::Long(n)) => {
                self.i += 1;
                Ok(Expr::Lit(Value::Long(n)))
            }
            Some(Tok::Real(f)) => {
                self.i += 1;
                Ok(Expr::Lit(Value::Real(f)))
            }
            Some(Tok::Timespan(t)) => {
                self.i += 1;
                Ok(Expr::Lit(Value::Timespan(t)))
            }
            Some(Tok::DateTime(raw)) => {
                self.i += 1;
                if raw.is_empty() {
                    return Ok(Expr::Call("now".into(), Vec::new()));
                }
                if raw == "null" {
                    return Err(QueryError::unsupported("datetime(null)"));
                }
                parse_datetime(&raw)
                    .map(|t| Expr::Lit(Value::DateTime(t)))
                    .ok_or_else(|| QueryError::syntax(line, pos, &text))
            }
            Some(Tok::Sym("(")) => {
                self.i += 1;
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Some(Tok::Sym("[")) => Ok(Expr::Column(self.ident()?)),
            Some(Tok::Ident(w)) => {
                self.i += 1;
                match w.as_str() {
                    "true" => return Ok(Expr::Lit(Value::Bool(true))),
                    "false" => return Ok(Expr::Lit(Value::Bool(false))),
                    _ => {}
                }
                if !self.is_sym("(") {
                    return Ok(Expr::Column(w));
                }
                self.i += 1;
                let mut args = Vec::new();
                if !self.is_sym(")") {
                    args.push(self.expr()?);
                    while self.is_sym(",") {
                        self.i += 1;
                        args.push(self.expr()?);
                    }
                }
                self.expect_sym(")")?;
                Ok(Expr::Call(w, args))
            }
            _ => Err(self.error_here()),
        }
    }
}

/// KQL's other string and set operators: known, not modelled.
fn is_other_string_operator(w: &str) -> bool {
    matches!(
        w,
        "has_any"
            | "has_all"
            | "hasprefix"
            | "hasprefix_cs"
            | "hassuffix"
            | "hassuffix_cs"
            | "matches"
            | "has_any_cs"
            | "contains_any"
    )
}

/// The datetime literal forms Kusto documents that the twin reads: ISO 8601 dates,
/// with a time (`T` or a space), optional seconds and fraction, `Z` or an offset;
/// and RFC 1123. Times without a zone are UTC, as in Kusto.
pub(super) fn parse_datetime(raw: &str) -> Option<DateTime<Utc>> {
    let s = raw.trim().trim_matches(|c| c == '"' || c == '\'');
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(t.with_timezone(&Utc));
    }
    let no_zone = s.strip_suffix('Z').unwrap_or(s);
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(no_zone, fmt) {
            return Some(t.and_utc());
        }
    }
    if no_zone.len() == s.len()
        && let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
    {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    None
}
