//! The exit code and the two forms of the report.

use super::*;

#[test]
fn the_exit_code_follows_the_worst_finding() {
    let plan = plan("discover = true");
    let fingerprints = || Fingerprints {
        source: FingerprintSource::ThisRun,
        path: None,
    };
    let ok = Report::new(
        fingerprints(),
        vec![report(&plan, &healthy(&plan))],
        Vec::new(),
    );
    assert_eq!(ok.exit(), Exit::Ok);
    let mut seen = healthy(&plan);
    seen.keys = Got::Failed(forbidden(actions::STORAGE_LIST_KEYS));
    let blocked = Report::new(fingerprints(), vec![report(&plan, &seen)], Vec::new());
    assert_eq!(blocked.exit(), Exit::Refused);
    let invalid = Report::new(
        fingerprints(),
        vec![report(&plan, &healthy(&plan))],
        vec![InvalidPlan {
            file: "plans/bad.toml".into(),
            message: "plans/bad.toml:1:1: expected a table".into(),
        }],
    );
    assert_eq!(invalid.exit(), Exit::Usage);
}

#[test]
fn the_table_and_the_json_carry_the_same_rows() {
    let plan = plan(r#"datastores = ["workspaceblobstore"]"#);
    let mut seen = healthy(&plan);
    seen.keys = Got::Failed(forbidden(actions::STORAGE_LIST_KEYS));
    let report = Report::new(
        Fingerprints {
            source: FingerprintSource::ThisRun,
            path: None,
        },
        vec![report(&plan, &seen)],
        Vec::new(),
    );
    let text = render::human(
        &report,
        &crate::commands::term::Term {
            unicode: true,
            ..crate::commands::term::Term::PLAIN
        }
        .with_width(1000),
    );
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    let checks = json["plans"][0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), report.plans[0].checks.len());
    for (check, value) in report.plans[0].checks.iter().zip(checks) {
        assert_eq!(value["check"], check.kind());
        assert_eq!(value["subject"], check.subject.as_str());
        let symbol = check.status.symbol();
        assert!(
            text.lines().any(|l| l.starts_with(&format!("  {symbol}  "))
                && l.contains(&check.subject)
                && l.ends_with(&check.finding)),
            "no row for {check:?} in\n{text}"
        );
        if let Some(fix) = &check.fix {
            assert!(text.contains(&format!("→ what to do: {fix}")), "{fix}");
        }
    }
    assert!(text.contains("a rotation would be blocked: t"), "{text}");
}
