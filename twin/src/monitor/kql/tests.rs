//! The KQL subset against a small `StorageBlobLogs`: answers computed by hand, and
//! the queries it must refuse (with the kind of error Azure gives, or as unsupported).

use chrono::{DateTime, TimeDelta, Utc};

use super::eval::Output;
use super::*;
use crate::monitor::schema::Table;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("rfc3339")
        .with_timezone(&Utc)
}

const NOW: &str = "2026-05-01T12:00:00Z";
const OLD: &str = "4C81DD1772CEA6215A976B5B9C0764F519518B179BA3C7257C7E745D337833E6";
const NEW: &str = "67F8F5A218837386F94E75FC7AAC530CD99957355C86E173D139401AC15D6011";

/// (minutes before NOW, account, auth type, hash, caller, agent, operation, status)
type Fixture = (
    i64,
    &'static str,
    &'static str,
    String,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

fn fixtures() -> Vec<Fixture> {
    vec![
        (
            90,
            "stdatasci001",
            "AccountKey",
            format!("key1({OLD})"),
            "10.0.0.7:50123",
            "legacy-etl/1.0",
            "GetBlob",
            "200",
        ),
        (
            50,
            "stdatasci001",
            "AccountKey",
            format!("key1({OLD})"),
            "10.0.0.7:50123",
            "legacy-etl/1.0",
            "GetBlob",
            "200",
        ),
        (
            40,
            "stdatasci001",
            "SAS",
            format!("key1({OLD}),SasSignature(AB12)"),
            "10.0.0.8:443",
            "azcopy/10.0",
            "PutBlob",
            "201",
        ),
        (
            30,
            "stdatasci001",
            "AccountKey",
            format!("key2({NEW})"),
            "127.0.0.1:40000",
            "keyflip/0.1",
            "GetAccountInformation",
            "200",
        ),
        (
            20,
            "stexternal002",
            "AccountKey",
            format!("key1({OLD})"),
            "10.0.0.9:1",
            "other/1",
            "ListContainers",
            "200",
        ),
        (
            10,
            "stdatasci001",
            "OAuth",
            "B3CC9D5C".into(),
            "10.0.0.7:50124",
            "legacy-etl/1.0",
            "GetBlob",
            "200",
        ),
        (
            5,
            "stdatasci001",
            "AccountKey",
            String::new(),
            "10.0.0.7:50123",
            "legacy-etl/1.0",
            "GetBlob",
            "403",
        ),
    ]
}

fn rows() -> Vec<Vec<Value>> {
    let table = Table::StorageBlobLogs;
    fixtures()
        .into_iter()
        .map(|(mins, account, auth, hash, caller, agent, op, status)| {
            let mut row: Vec<Value> = table
                .columns()
                .iter()
                .map(|(_, ty)| match ty {
                    Type::String => Value::Str(String::new()),
                    _ => Value::Null,
                })
                .collect();
            let mut set = |name: &str, v: Value| {
                row[table.column(name).expect(name)] = v;
            };
            set(
                "TimeGenerated",
                Value::DateTime(t(NOW) - TimeDelta::minutes(mins)),
            );
            set("AccountName", Value::Str(account.into()));
            set("AuthenticationType", Value::Str(auth.into()));
            set("AuthenticationHash", Value::Str(hash));
            set("CallerIpAddress", Value::Str(caller.into()));
            set("UserAgentHeader", Value::Str(agent.into()));
            set("OperationName", Value::Str(op.into()));
            set("StatusCode", Value::Str(status.into()));
            set("DurationMs", Value::Real(mins as f64 / 10.0));
            set("OperationCount", Value::Long(0));
            row
        })
        .collect()
}

fn query(q: &str) -> Result<Output, QueryError> {
    let data = rows();
    let parsed = parse(q)?;
    let sources = tables(&parsed)?
        .into_iter()
        .map(|table| Source {
            table,
            rows: if table == Table::StorageBlobLogs {
                data.iter().map(Vec::as_slice).collect()
            } else {
                Vec::new()
            },
        })
        .collect();
    run(&parsed, sources, t(NOW))
}

fn ok(q: &str) -> Output {
    query(q).unwrap_or_else(|e| panic!("{q}: {e:?}"))
}

fn column<'a>(out: &'a Output, name: &str) -> Vec<&'a Value> {
    let i = out
        .columns
        .iter()
        .position(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", out.columns));
    out.rows.iter().map(|r| &r[i]).collect()
}

fn strs(out: &Output, name: &str) -> Vec<String> {
    column(out, name)
        .into_iter()
        .map(|v| match v {
            Value::Str(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The usage-gate query from twin/README.md, filled in: the contract with keyflip.
fn readme_query(account: &str, since: &str, until: &str, sha: &str) -> String {
    let readme = include_str!("../../../README.md");
    let template = readme
        .split("<!-- usage-gate-query -->")
        .nth(1)
        .and_then(|rest| rest.split("```kusto").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("twin/README.md has the usage-gate query under its marker");
    template
        .replace("{account}", account)
        .replace("{since}", since)
        .replace("{until}", until)
        .replace("{key_sha256}", sha)
}

#[test]
fn the_readme_usage_gate_query_finds_old_key_callers_grouped() {
    let q = readme_query("stdatasci001", "2026-05-01T10:45:00Z", NOW, OLD);
    let out = ok(&q);
    let names: Vec<&str> = out.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "CallerIpAddress",
            "UserAgentHeader",
            "OperationName",
            "AuthenticationType",
            "Requests",
            "FirstSeen",
            "LastSeen"
        ]
    );
    let types: Vec<&str> = out.columns.iter().map(|(_, t)| t.name()).collect();
    assert_eq!(
        types,
        vec![
            "string", "string", "string", "string", "long", "datetime", "datetime"
        ]
    );
    // The 90-minute-old request is outside the window; the key2 request, the other
    // account, OAuth and the refused request (no hash) are not old-key use. Sorted
    // by LastSeen, newest first.
    assert_eq!(out.rows.len(), 2, "{:?}", out.rows);
    assert_eq!(
        strs(&out, "CallerIpAddress"),
        vec!["10.0.0.8:443", "10.0.0.7:50123"]
    );
    assert_eq!(strs(&out, "AuthenticationType"), vec!["SAS", "AccountKey"]);
    assert_eq!(
        column(&out, "Requests"),
        vec![&Value::Long(1), &Value::Long(1)]
    );
    assert_eq!(
        column(&out, "FirstSeen")[1],
        &Value::DateTime(t(NOW) - TimeDelta::minutes(50))
    );
    // A window that opens earlier counts both GetBlob requests of the ETL client.
    let q = readme_query("stdatasci001", "2026-05-01T10:00:00Z", NOW, OLD);
    let out = ok(&q);
    let etl = out
        .rows
        .iter()
        .find(|r| r[0] == Value::Str("10.0.0.7:50123".into()))
        .expect("the ETL caller");
    assert_eq!(etl[4], Value::Long(2));
    assert_eq!(etl[5], Value::DateTime(t(NOW) - TimeDelta::minutes(90)));
    assert_eq!(etl[6], Value::DateTime(t(NOW) - TimeDelta::minutes(50)));
    // The new key's fingerprint finds only keyflip's own probe; a lower-case
    // fingerprint matches too (`has` ignores case).
    let q = readme_query(
        "stdatasci001",
        "2026-05-01T10:00:00Z",
        NOW,
        &NEW.to_lowercase(),
    );
    assert_eq!(strs(&ok(&q), "UserAgentHeader"), vec!["keyflip/0.1"]);
}

#[test]
fn where_filters_with_kusto_semantics() {
    let count = |q: &str| ok(q).rows.len();
    assert_eq!(count("StorageBlobLogs"), 7);
    assert_eq!(
        count("StorageBlobLogs | where AccountName == 'stdatasci001'"),
        6
    );
    assert_eq!(
        count("StorageBlobLogs | where AccountName == 'STDATASCI001'"),
        0,
        "== is case-sensitive"
    );
    assert_eq!(
        count("StorageBlobLogs | where AccountName =~ 'STDATASCI001'"),
        6
    );
    assert_eq!(
        count("StorageBlobLogs | where AccountName != 'stdatasci001'"),
        1
    );
    assert_eq!(count("StorageBlobLogs | where TimeGenerated > ago(45m)"), 5);
    assert_eq!(
        count("StorageBlobLogs | where TimeGenerated >= now(-45m)"),
        5
    );
    assert_eq!(count("StorageBlobLogs | where TimeGenerated > ago(1d)"), 7);
    assert_eq!(
        count(
            "StorageBlobLogs | where TimeGenerated between (datetime(2026-05-01 10:30) .. datetime(2026-05-01T11:30:00Z))"
        ),
        4,
        "between is inclusive at both ends"
    );
    assert_eq!(
        count(
            "StorageBlobLogs | where TimeGenerated between (datetime(2026-05-01T10:30:00Z) .. 1h)"
        ),
        4,
        "an upper bound relative to the lower"
    );
    assert_eq!(
        count(
            "StorageBlobLogs | where TimeGenerated !between (datetime(2026-05-01T10:30:00Z) .. 1h)"
        ),
        3
    );
    assert_eq!(
        count("StorageBlobLogs | where AuthenticationType in ('AccountKey', 'SAS')"),
        6
    );
    assert_eq!(
        count("StorageBlobLogs | where AuthenticationType !in ('AccountKey', 'SAS')"),
        1
    );
    assert_eq!(
        count("StorageBlobLogs | where AuthenticationType in~ ('accountkey')"),
        5
    );
    assert_eq!(
        count("StorageBlobLogs | where AuthenticationType in ('accountkey')"),
        0
    );
    assert_eq!(
        count(&format!(
            "StorageBlobLogs | where AuthenticationHash has '{OLD}'"
        )),
        4
    );
    assert_eq!(
        count(&format!(
            "StorageBlobLogs | where AuthenticationHash contains '{}'",
            &OLD[10..30]
        )),
        4
    );
    assert_eq!(
        count(&format!(
            "StorageBlobLogs | where AuthenticationHash has '{}'",
            &OLD[..30]
        )),
        0,
        "has needs the whole term"
    );
    assert_eq!(
        count("StorageBlobLogs | where AuthenticationHash has 'key1'"),
        4
    );
    assert_eq!(
        count("StorageBlobLogs | where AuthenticationHash has_cs 'KEY1'"),
        0
    );
    assert_eq!(
        count("StorageBlobLogs | where AuthenticationHash startswith 'KEY2('"),
        1
    );
    assert_eq!(
        count("StorageBlobLogs | where AuthenticationHash startswith_cs 'KEY2('"),
        0
    );
    assert_eq!(
        count("StorageBlobLogs | where UserAgentHeader endswith '/1.0'"),
        4
    );
    assert_eq!(
        count("StorageBlobLogs | where UserAgentHeader !contains 'etl'"),
        3
    );
    assert_eq!(
        count("StorageBlobLogs | where isempty(AuthenticationHash)"),
        1
    );
    assert_eq!(
        count("StorageBlobLogs | where isnotempty(AuthenticationHash) and StatusCode == '200'"),
        5
    );
    assert_eq!(count("StorageBlobLogs | where not(StatusCode == '200')"), 2);
    assert_eq!(
        count("StorageBlobLogs | where StatusCode == '403' or OperationName == 'PutBlob'"),
        2
    );
    assert_eq!(
        count("StorageBlobLogs | where tolower(OperationName) == 'getblob'"),
        4
    );
    assert_eq!(
        count("StorageBlobLogs | where DurationMs > 4"),
        2,
        "numeric comparisons across long and real"
    );
    // Null is neither true nor false: LastModifiedTime is null everywhere.
    assert_eq!(count("StorageBlobLogs | where LastModifiedTime < now()"), 0);
    assert_eq!(
        count("StorageBlobLogs | where not(LastModifiedTime < now())"),
        0
    );
    assert_eq!(count("StorageBlobLogs | where isnull(LastModifiedTime)"), 7);
    assert_eq!(
        count("StorageBlobLogs | where LastModifiedTime < now() or true"),
        7
    );
    assert_eq!(
        count("// a comment\nStorageBlobLogs\n| filter OperationName == \"GetBlob\";"),
        4
    );
}

#[test]
fn project_take_sort_top_and_count() {
    let out = ok("StorageBlobLogs | project AccountName, When = TimeGenerated | take 2");
    assert_eq!(
        out.columns,
        vec![
            ("AccountName".into(), Type::String),
            ("When".into(), Type::DateTime)
        ]
    );
    assert_eq!(out.rows.len(), 2);
    let out = ok("StorageBlobLogs | sort by TimeGenerated asc | project OperationName | limit 2");
    assert_eq!(strs(&out, "OperationName"), vec!["GetBlob", "GetBlob"]);
    let out = ok("StorageBlobLogs | order by TimeGenerated | take 1 | project StatusCode");
    assert_eq!(
        strs(&out, "StatusCode"),
        vec!["403"],
        "sort is descending by default"
    );
    let out = ok("StorageBlobLogs | top 2 by DurationMs | project OperationName");
    assert_eq!(strs(&out, "OperationName"), vec!["GetBlob", "GetBlob"]);
    let out = ok("StorageBlobLogs | top 1 by DurationMs asc | project StatusCode");
    assert_eq!(strs(&out, "StatusCode"), vec!["403"]);
    let out = ok("StorageBlobLogs | where AccountName == 'nope' | count");
    assert_eq!(out.columns, vec![("Count".into(), Type::Long)]);
    assert_eq!(out.rows, vec![vec![Value::Long(0)]]);
    let out = ok("StorageBlobLogs | take 0");
    assert_eq!(out.columns.len(), 55);
    assert!(out.rows.is_empty());
}

#[test]
fn summarize_names_types_and_groups_like_kusto() {
    let out = ok(
        "StorageBlobLogs | summarize count(), min(TimeGenerated), max(TimeGenerated) by AccountName",
    );
    let names: Vec<&str> = out.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "AccountName",
            "count_",
            "min_TimeGenerated",
            "max_TimeGenerated"
        ]
    );
    assert_eq!(out.rows.len(), 2);
    let datasci = out
        .rows
        .iter()
        .find(|r| r[0] == Value::Str("stdatasci001".into()))
        .expect("group");
    assert_eq!(datasci[1], Value::Long(6));
    assert_eq!(datasci[2], Value::DateTime(t(NOW) - TimeDelta::minutes(90)));
    assert_eq!(datasci[3], Value::DateTime(t(NOW) - TimeDelta::minutes(5)));
    // No `by` and no rows: one row, count 0, min null.
    let out = ok(
        "StorageBlobLogs | where AccountName == 'nope' | summarize n = count(), first = min(TimeGenerated)",
    );
    assert_eq!(out.rows, vec![vec![Value::Long(0), Value::Null]]);
    // With `by` and no rows: no rows.
    let out =
        ok("StorageBlobLogs | where AccountName == 'nope' | summarize count() by CallerIpAddress");
    assert!(out.rows.is_empty());
    let out = ok(
        "StorageBlobLogs | summarize ok = countif(StatusCode == '200'), n = count() by Ip = CallerIpAddress | where Ip == '10.0.0.7:50123'",
    );
    assert_eq!(
        out.rows,
        vec![vec![
            Value::Str("10.0.0.7:50123".into()),
            Value::Long(2),
            Value::Long(3)
        ]]
    );
    let out = ok("StorageBlobLogs | summarize by OperationName | count");
    assert_eq!(out.rows, vec![vec![Value::Long(4)]]);
}

#[test]
fn union_of_the_storage_tables_has_their_columns_and_only_blob_rows() {
    let out = ok(
        "union StorageBlobLogs, StorageFileLogs, StorageQueueLogs, StorageTableLogs | where AuthenticationType == 'SAS' | project AccountName, SmbFileId",
    );
    assert_eq!(
        out.rows,
        vec![vec![Value::Str("stdatasci001".into()), Value::Null]]
    );
    let out = ok("StorageFileLogs | take 5");
    assert!(out.rows.is_empty());
    assert!(out.columns.iter().any(|(n, _)| n == "SmbCommandMajor"));
}

#[test]
fn timespans_print_like_dotnet() {
    assert_eq!(format_timespan(36_000_000_000), "01:00:00");
    assert_eq!(
        format_timespan(864_000_000_000 + 15_000_000),
        "1.00:00:01.5000000"
    );
    assert_eq!(format_timespan(-600_000_000), "-00:01:00");
}

fn kind(q: &str) -> QueryError {
    match query(q) {
        Ok(out) => panic!("{q} was answered: {:?}", out.rows),
        Err(e) => e,
    }
}

#[test]
fn what_azure_would_refuse_is_refused_the_same_way() {
    // Syntax errors, at their line and position.
    for (q, line, pos, token) in [
        ("StorageBlobLogs | wher AccountName == 'x'", 1, 18, "wher"),
        ("StorageBlobLogs\n| where AccountName == ", 2, 22, "<EOF>"),
        (
            "StorageBlobLogs | where (AccountName == 'x'",
            1,
            43,
            "<EOF>",
        ),
        ("StorageBlobLogs | take", 1, 22, "<EOF>"),
        (
            "StorageBlobLogs | where TimeGenerated > datetime(yesterday)",
            1,
            40,
            "datetime(yesterday)",
        ),
        ("StorageBlobLogs | summarize", 1, 27, "<EOF>"),
        ("| take 1", 1, 0, "|"),
    ] {
        assert_eq!(
            kind(q),
            QueryError::Syntax {
                line,
                pos,
                token: token.into()
            },
            "{q}"
        );
    }
    // Unknown tables and columns: SEM0100 with Azure's wording.
    assert_eq!(
        kind("StorageBlobLog | take 1"),
        QueryError::semantic(
            "'take' operator: Failed to resolve table or column expression named 'StorageBlobLog'"
        )
    );
    assert_eq!(
        kind("StorageBlobLogs | where Account == 'x'"),
        QueryError::semantic(
            "'where' operator: Failed to resolve column or scalar expression named 'Account'"
        )
    );
    assert_eq!(
        kind("StorageBlobLogs | project accountname"),
        QueryError::semantic(
            "'project' operator: Failed to resolve scalar expression named 'accountname'"
        )
    );
    assert_eq!(
        kind("StorageBlobLogs | summarize count() by AccountName | project CallerIpAddress"),
        QueryError::semantic(
            "'project' operator: Failed to resolve scalar expression named 'CallerIpAddress'"
        )
    );
    // Type errors Kusto refuses: StatusCode is a string.
    assert_eq!(
        kind("StorageBlobLogs | where StatusCode == 200"),
        QueryError::semantic(
            "Cannot compare values of types string and long. Try adding explicit casts"
        )
    );
    assert!(matches!(
        kind("StorageBlobLogs | where TimeGenerated > '2026-01-01'"),
        QueryError::Semantic { .. }
    ));
    assert!(matches!(
        kind("StorageBlobLogs | where AccountName"),
        QueryError::Semantic { .. }
    ));
    assert!(matches!(
        kind("StorageBlobLogs | where TimeGenerated > ago('1h')"),
        QueryError::Semantic { .. }
    ));
}

#[test]
fn valid_kql_outside_the_subset_is_refused_never_guessed() {
    for q in [
        "StorageBlobLogs | extend Ip = tostring(split(CallerIpAddress, ':')[0])",
        "StorageBlobLogs | summarize count() by bin(TimeGenerated, 1h)",
        "StorageBlobLogs | summarize dcount(CallerIpAddress)",
        "StorageBlobLogs | distinct CallerIpAddress",
        "StorageBlobLogs | join (StorageBlobLogs) on CallerIpAddress",
        "let x = 1; StorageBlobLogs",
        "StorageBlobLogs | where AuthenticationHash has 'key1(ABC'",
        "StorageBlobLogs | where AuthenticationHash has_any ('a', 'b')",
        "StorageBlobLogs | where AuthenticationHash matches regex 'k.*'",
        "StorageBlobLogs | where strlen(AccountName) > 3",
        "StorageBlobLogs | sort by AccountName",
        "StorageBlobLogs | where AccountName < 'm'",
        "StorageBlobLogs | summarize min(AccountName)",
        "StorageBlobLogs | project DurationMs * 2",
        "StorageBlobLogs | project x = DurationMs * 2",
        "StorageBlobLogs | project AccountName, AccountName",
        "union * | take 1",
        "union kind=inner StorageBlobLogs, StorageFileLogs",
        "workspace('other').StorageBlobLogs | take 1",
        "StorageBlobLogs | where AuthorizationDetails == 'x'",
        "StorageBlobLogs | take 1; StorageBlobLogs | take 2",
        "print 1",
        "StorageBlobLogs | project-away Uri",
        "StorageBlobLogs | where TimeGenerated > datetime(null)",
    ] {
        assert!(
            matches!(kind(q), QueryError::Unsupported { .. }),
            "{q}: {:?}",
            query(q)
        );
    }
}

#[test]
fn has_refuses_data_where_kusto_term_boundaries_are_uncertain() {
    let mut data = rows();
    let i = Table::StorageBlobLogs
        .column("UserAgentHeader")
        .expect("column");
    data[0][i] = Value::Str("tool_legacy/1.0".into());
    let parsed = parse("StorageBlobLogs | where UserAgentHeader has 'legacy'").expect("parses");
    let sources = vec![Source {
        table: Table::StorageBlobLogs,
        rows: data.iter().map(Vec::as_slice).collect(),
    }];
    assert!(matches!(
        run(&parsed, sources, t(NOW)),
        Err(QueryError::Unsupported { .. })
    ));
}

#[test]
fn errors_have_log_analytics_inner_shapes() {
    let e = QueryError::syntax(2, 0, "<");
    assert_eq!(
        e.inner_json(),
        serde_json::json!({
            "code": "SyntaxError",
            "message": "A recognition error occurred in the query.",
            "innererror": {"code": "SYN0002", "message": "Query could not be parsed at '<' on line [2,0]", "line": 2, "pos": 0, "token": "<"},
        })
    );
    let e = QueryError::semantic(
        "'take' operator: Failed to resolve table or column expression named 'Appquests'",
    );
    assert_eq!(e.inner_json()["innererror"]["code"], "SEM0100");
    let e = QueryError::unsupported("the 'join' operator");
    assert_eq!(
        e.inner_json()["innererror"]["code"],
        "KeyflipTwinUnsupported"
    );
}
