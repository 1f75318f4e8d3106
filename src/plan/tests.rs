//! Plans as users write them: the shipped examples, every kind of mistake and its
//! message, directories of plans and `plan check`.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::consumer::key_vault::KeyVaultSecret;
use crate::consumer::workspace::MlWorkspace;
use crate::consumer::{Entry, SecretFormat, discovers};
use crate::exit::Exit;

const ACCOUNT: &str =
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stacct01";
const WORKSPACE: &str = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/mlw";

fn minimal() -> String {
    format!(
        r#"storage_account = "{ACCOUNT}"

[[key_vault]]
vault = "https://kv.vault.azure.net"
secret = "stacct01-key"
format = "raw-key"
"#
    )
}

/// The plan's `[[key_vault]]` tables.
fn key_vault(plan: &Plan) -> Vec<&KeyVaultSecret> {
    plan.consumers
        .iter()
        .filter_map(|e| match e {
            Entry::KeyVault(kv) => Some(kv),
            _ => None,
        })
        .collect()
}

/// The plan's `[[ml_workspace]]` tables.
fn ml_workspaces(plan: &Plan) -> Vec<&MlWorkspace> {
    plan.consumers
        .iter()
        .filter_map(|e| match e {
            Entry::MlWorkspace(ws) => Some(ws),
            _ => None,
        })
        .collect()
}

fn errors(source: &str) -> Vec<SourceError> {
    match parse(source, "plans/t.toml") {
        Ok(plan) => panic!("expected errors, got {plan:?}"),
        Err(e) => e.errors().to_vec(),
    }
}

/// The one error whose message contains `needle`.
fn error_with<'a>(errors: &'a [SourceError], needle: &str) -> &'a SourceError {
    let found: Vec<_> = errors
        .iter()
        .filter(|e| e.message.contains(needle))
        .collect();
    assert_eq!(found.len(), 1, "one error with {needle:?} in {errors:#?}");
    found[0]
}

fn hint(e: &SourceError) -> &str {
    e.hint.as_deref().unwrap_or_default()
}

/// `rotation-plans/` holds the demo world's plan (what a daemon pointed at a twin
/// runs); `rotation-plans/examples/` holds production templates.
fn examples_dirs() -> [PathBuf; 2] {
    [examples_dir().join("examples"), examples_dir()]
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rotation-plans")
}

#[test]
fn every_shipped_example_is_a_valid_plan() {
    let mut total = 0;
    for dir in examples_dirs() {
        let (plans, errors) = load_dir(&dir);
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{}", shown.join("\n"));
        let files = plan_files(&dir).unwrap();
        assert_eq!(plans.len(), files.len(), "{}", dir.display());
        let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "load_dir sorts by name");
        total += plans.len();
    }
    assert!(total >= 4, "demo plus three production examples");
}

#[test]
fn the_complete_plan_in_the_reference_is_valid() {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/plans.md"))
        .unwrap();
    let after = docs.split("## A complete plan").nth(1).unwrap();
    let block = after
        .split("```toml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let plan = parse(block, "docs/datasci.toml").unwrap();
    assert_eq!(plan.consumer_ids().len(), 6);
    assert_eq!(
        plan.notify[0].events,
        [NotifyEvent::Failure, NotifyEvent::NeedsAttention]
    );
    assert!(
        plan.notify[0].wants(NotifyEvent::Failure) && !plan.notify[0].wants(NotifyEvent::Drift)
    );
}

#[test]
fn the_demo_plan_names_the_demo_world() {
    let plan = load(&examples_dir().join("demo.toml")).unwrap();
    assert_eq!(plan.name, "demo");
    assert_eq!(plan.storage_account.name(), "stdatasci001");
    assert_eq!(
        plan.storage_account.subscription(),
        "3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a"
    );
    assert_eq!(plan.storage_account.resource_group(), "rg-datascience");
    let ids: Vec<String> = plan.consumer_ids().iter().map(|c| c.to_string()).collect();
    assert_eq!(
        ids,
        [
            "keyvault:https://127.0.0.1:47443/keyvault/kv-datasci/secrets/stdatasci001-key",
            "keyvault:https://127.0.0.1:47443/keyvault/kv-datasci/secrets/stdatasci001-connection-string",
            "workspace:/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.MachineLearningServices/workspaces/mlw-datasci",
            "databricks:https://127.0.0.1:47443/databricks/dbw-datasci#datasci/stdatasci001-key",
            "appservice:/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.Web/sites/func-datasci-ingest/config/appsettings/AzureWebJobsStorage",
            "datafactory:/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg-datascience/providers/Microsoft.DataFactory/factories/adf-datasci/linkedservices/ls_stdatasci001_blob",
        ]
    );
    assert_eq!(discovers(&plan), Some("datastores"));
    assert_eq!(key_vault(&plan)[1].format, SecretFormat::ConnectionString);
    assert_eq!(plan.rotation.grace, Duration::from_secs(30));
    let schedule = plan.schedule.as_ref().unwrap();
    assert_eq!(schedule.cron().unwrap().source(), "*/10 * * * *");
    // The demo replaces the twin's address in the text before parsing.
    let text = std::fs::read_to_string(examples_dir().join("demo.toml")).unwrap();
    let moved = parse(
        &text.replace("https://127.0.0.1:47443", "https://127.0.0.1:50123"),
        "demo.toml",
    )
    .unwrap();
    assert_eq!(
        key_vault(&moved)[0].vault,
        "https://127.0.0.1:50123/keyvault/kv-datasci"
    );
}

#[test]
fn a_minimal_plan_gets_the_documented_defaults() {
    let plan = parse(&minimal(), "plans/minimal.toml").unwrap();
    assert_eq!(plan.name, "minimal");
    assert_eq!(plan.origin(), "plans/minimal.toml");
    assert!(plan.schedule.is_none(), "no [schedule]: on demand only");
    assert_eq!(plan.rotation, Rotation::default());
    assert_eq!(plan.rotation.grace, Duration::from_secs(3_600));
    assert_eq!(plan.rotation.verify_budget, Duration::from_secs(60));
    assert_eq!(plan.rotation.retire_attempts, 8);
    assert_eq!(plan.drift.interval, Duration::from_secs(900));
    assert!(!plan.drift.repair);
    assert_eq!(key_vault(&plan)[0].content_type, "text/plain");
    assert!(key_vault(&plan)[0].tags.is_empty());
    assert!(plan.notify.is_empty());
}

#[test]
fn consumer_ids_have_the_documented_forms() {
    // The forms themselves are `crate::consumer`'s (tested there).
    // A trailing slash in the plan does not change the id.
    let plan = parse(
        &minimal().replace("https://kv.vault.azure.net", "https://KV.vault.azure.net/"),
        "p.toml",
    )
    .unwrap();
    assert_eq!(
        key_vault(&plan)[0].id().to_string(),
        "keyvault:https://kv.vault.azure.net/secrets/stacct01-key"
    );
}

#[test]
fn named_datastores_and_resync_become_consumers() {
    let source = format!(
        r#"storage_account = "{ACCOUNT}"

[[ml_workspace]]
workspace = "{WORKSPACE}"
datastores = ["training_data", "feature_snapshots"]
"#
    );
    let plan = parse(&source, "ml.toml").unwrap();
    assert!(ml_workspaces(&plan)[0].resync, "resync defaults to true");
    let ids: Vec<String> = plan.consumer_ids().iter().map(|c| c.to_string()).collect();
    assert_eq!(
        ids,
        [
            format!("workspace:{WORKSPACE}"),
            format!("datastore:{WORKSPACE}/datastores/training_data"),
            format!("datastore:{WORKSPACE}/datastores/feature_snapshots"),
        ]
    );
    let no_resync = parse(
        &source.replace("datastores =", "resync = false\ndatastores ="),
        "ml.toml",
    )
    .unwrap();
    assert_eq!(no_resync.consumer_ids().len(), 2);
}

#[test]
fn every_unknown_key_is_reported_with_a_suggestion() {
    let source = format!(
        r#"storage_acount = "{ACCOUNT}"
storage_account = "{ACCOUNT}"

[schedule]
crom = "0 3 * * *"
max_key_age = "90d"
window = {{ start = "01:00", end = "05:00", dayz = ["sat"] }}

[[keyvault]]
vault = "https://kv.vault.azure.net"

[[key_vault]]
vault = "https://kv.vault.azure.net"
secret = "s"
format = "raw-key"
colour = "blue"
"#
    );
    let errors = errors(&source);
    assert_eq!(errors.len(), 5, "{errors:#?}");
    let e = error_with(&errors, "`storage_acount`");
    assert_eq!((e.file.as_str(), e.line, e.column), ("plans/t.toml", 1, 1));
    assert!(
        hint(e).starts_with("did you mean `storage_account`?"),
        "{}",
        hint(e)
    );
    let e = error_with(&errors, "`crom`");
    assert_eq!(e.line, 5);
    assert!(hint(e).contains("did you mean `cron`?"), "{}", hint(e));
    assert!(
        hint(e).contains("max_key_age, window, jitter"),
        "{}",
        hint(e)
    );
    let e = error_with(&errors, "`dayz`");
    assert_eq!(e.line, 7);
    assert!(hint(e).contains("`days`"), "{}", hint(e));
    let e = error_with(&errors, "`keyvault`");
    assert!(hint(e).contains("`key_vault`"), "{}", hint(e));
    let e = error_with(&errors, "`colour`");
    assert_eq!(e.line, 16);
    assert!(
        hint(e).starts_with("valid keys: vault, secret, format"),
        "{}",
        hint(e)
    );
}

#[test]
fn a_bad_cron_shows_croners_complaint_and_an_example() {
    let source = minimal() + "\n[schedule]\ncron = \"0 25 * * *\"\n";
    let errors = errors(&source);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert_eq!((e.line, e.column), (9, 8));
    assert!(
        e.message
            .starts_with("invalid cron expression `0 25 * * *`: "),
        "{}",
        e.message
    );
    assert!(hint(e).contains("\"0 3 * * SUN\""), "{}", hint(e));
    let never = errors_of_schedule("cron = \"0 0 30 2 *\"");
    assert!(never[0].message.contains("never fires"), "{never:#?}");
    let often = errors_of_schedule("cron = \"*/10 * * * * *\"");
    assert!(
        often[0].message.contains("at most once a minute"),
        "{often:#?}"
    );
}

fn errors_of_schedule(lines: &str) -> Vec<SourceError> {
    errors(&(minimal() + "\n[schedule]\n" + lines + "\n"))
}

#[test]
fn time_zones_durations_and_windows_are_checked() {
    let e = errors_of_schedule("cron = \"0 3 * * *\"\ntimezone = \"europe/berlin\"");
    assert!(
        e[0].message.contains("unknown time zone `europe/berlin`"),
        "{e:#?}"
    );
    assert!(
        hint(&e[0]).contains("did you mean \"Europe/Berlin\"?"),
        "{e:#?}"
    );
    let e = errors_of_schedule("cron = \"0 3 * * *\"\ntimezone = \"Mars/Olympus\"");
    assert!(hint(&e[0]).contains("IANA"), "{e:#?}");

    let e = errors_of_schedule("max_key_age = \"90\"");
    assert!(
        e[0].message
            .contains("max_key_age: `90`: the number 90 has no unit"),
        "{e:#?}"
    );
    assert!(hint(&e[0]).contains("1h30m"), "{e:#?}");

    let e = errors_of_schedule(
        "cron = \"0 3 * * *\"\nwindow = { start = \"1am\", end = \"05:00\", days = [\"sat\", \"caturday\"] }",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    error_with(&e, "window start `1am` is not a time of day");
    let day = error_with(&e, "unknown day `caturday`");
    assert!(hint(day).contains("mon, tue"), "{e:#?}");

    let e = errors_of_schedule("timezone = \"UTC\"");
    assert!(
        e[0].message
            .contains("needs `cron`, `max_key_age`, or both"),
        "{e:#?}"
    );

    let e = errors_of_schedule(
        "cron = \"0 3 * * *\"\nwindow = { start = \"01:00\", end = \"02:00\" }\njitter = \"2h\"",
    );
    assert!(
        e[0].message
            .contains("not shorter than the 1h rotation window"),
        "{e:#?}"
    );
    assert_eq!(e[0].line, 11, "points at jitter");

    let e = errors_of_schedule("cron = \"0 3 * * *\"\nwindow = \"01:00-05:00\"");
    assert!(e[0].message.contains("`window` must be a table"), "{e:#?}");
}

#[test]
fn rotation_drift_and_notify_values_are_checked() {
    let source = minimal()
        + r#"
[rotation]
grace = "1.5h"
verify_budget = "0s"
retire_attempts = 0

[drift]
interval = "5s"

[[notify]]
webhook = "http://hooks.example.com/x"
events = ["failure", "needs_attention"]
"#;
    let errors = errors(&source);
    assert_eq!(errors.len(), 6, "{errors:#?}");
    error_with(&errors, "fractions are not supported");
    let e = error_with(&errors, "verify_budget 0s is out of range");
    assert_eq!(hint(e), "verify_budget must be between 1s and 1h");
    error_with(&errors, "retire_attempts = 0 is out of range");
    error_with(&errors, "interval 5s is out of range");
    error_with(&errors, "webhook must be an https URL");
    let e = error_with(&errors, "unknown event `needs_attention`");
    assert!(
        hint(e).starts_with("did you mean \"needs-attention\"?"),
        "{}",
        hint(e)
    );
}

#[test]
fn wrong_types_are_reported_where_they_are() {
    let source = minimal() + "\n[rotation]\nretire_attempts = \"8\"\n";
    let errors = errors(&source);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 9);
    assert!(errors[0].message.contains("invalid type"), "{errors:#?}");
    assert!(hint(&errors[0]).contains("[rotation]"), "{errors:#?}");

    let single_table = minimal().replace("[[key_vault]]", "[key_vault]");
    let errors = self::errors(&single_table);
    assert!(
        errors[0]
            .message
            .contains("`key_vault` must be an array of tables"),
        "{errors:#?}"
    );
    assert!(hint(&errors[0]).contains("[[key_vault]]"), "{errors:#?}");
}

#[test]
fn consumer_rules_are_enforced() {
    let source = format!(
        r#"storage_account = "{ACCOUNT}"

[[key_vault]]
vault = "http://kv.vault.azure.net"
secret = "bad_name!"
format = "raw"
tags = {{ keyflip-key = "x" }}

[[ml_workspace]]
workspace = "{WORKSPACE}"
datastores = ["training_data"]
discover = true

[[ml_workspace]]
workspace = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
discover = true

[[databricks]]
workspace_url = "https://adb-1.2.azuredatabricks.net"
scope = "datasci"
format = "raw-key"
"#
    );
    let errors = errors(&source);
    let e = error_with(&errors, "vault must be an https URL, found `http:`");
    assert_eq!((e.line, e.column), (4, 9));
    error_with(&errors, "secret `bad_name!` is not a valid name");
    let e = error_with(&errors, "unknown format `raw`");
    assert!(hint(e).contains("\"raw-key\""));
    error_with(&errors, "tag `keyflip-key` uses the reserved prefix");
    let e = error_with(&errors, "`datastores` and `discover = true` are both set");
    assert_eq!(e.line, 12, "points at discover");
    error_with(
        &errors,
        "is a Microsoft.KeyVault/vaults id, expected a Microsoft.MachineLearningServices/workspaces id",
    );
    let e = error_with(&errors, "[[databricks]] is missing `key`");
    assert!(hint(e).starts_with("add key = "), "{}", hint(e));
    assert_eq!(errors.len(), 7, "{errors:#?}");
    // Sorted in source order.
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted);
}

/// A Key Vault secret version holds at most 15 tags and keyflip writes three of its
/// own: 12 in the plan pass, 13 are refused before anything is regenerated, with the
/// limit named and the 13th tag pointed at.
#[test]
fn key_vault_tags_are_refused_past_azures_limit_of_fifteen() {
    let plan = |n: usize, extra: &str| {
        let tags: Vec<String> = (0..n).map(|i| format!("t{i:02} = \"v\"")).collect();
        format!(
            "storage_account = \"{ACCOUNT}\"\n\n[[key_vault]]\nvault = \"https://kv.vault.azure.net\"\nsecret = \"k\"\nformat = \"raw-key\"\ntags = {{ {}{extra} }}\n",
            tags.join(", ")
        )
    };
    let twelve = parse(&plan(12, ""), "plans/t.toml").expect("12 of the plan's + 3 = 15");
    assert_eq!(key_vault(&twelve)[0].tags.len(), 12);
    let e = errors(&plan(13, ""));
    assert_eq!(e.len(), 1, "{e:#?}");
    let over = error_with(
        &e,
        "13 tags, but Key Vault allows at most 15 on a secret and keyflip writes 3 of its own",
    );
    assert_eq!(hint(over), "keep at most 12 tags here");
    let line = plan(13, "");
    let column = line.lines().nth(6).unwrap().find("t12").unwrap() + 1;
    assert_eq!(
        (over.line, over.column),
        (7, column),
        "points at the 13th tag"
    );
    // keyflip's own CredentialId would overwrite the plan's: refused by name.
    let e = errors(&plan(1, ", CredentialId = \"x\""));
    error_with(&e, "tag `CredentialId` is written by keyflip");
}

#[test]
fn a_plan_needs_an_account_and_a_consumer_and_no_consumer_twice() {
    let e = errors("description = \"nothing\"\n");
    error_with(&e, "no `storage_account`");
    error_with(&e, "the plan has no consumers");

    let e = errors(&format!(
        "storage_account = \"{ACCOUNT}\"\nkey_vault = []\n"
    ));
    let none = error_with(&e, "the plan has no consumers");
    assert!(hint(none).contains("[[key_vault]]"), "{}", hint(none));

    let twice = minimal()
        + "\n[[key_vault]]\nvault = \"https://kv.vault.azure.net/\"\nsecret = \"STACCT01-KEY\"\nformat = \"raw-key\"\n";
    let e = errors(&twice);
    let dup = error_with(&e, "is listed twice");
    assert_eq!(dup.line, 8);
    assert!(hint(dup).contains("line 3"), "{}", hint(dup));

    let not_storage = minimal().replace(
        "Microsoft.Storage/storageAccounts/stacct01",
        "Microsoft.Storage/storageAccounts/St_Acct",
    );
    error_with(
        &errors(&not_storage),
        "`St_Acct` is not a storage account name",
    );
    let wrong_type = minimal().replace("Microsoft.Storage/storageAccounts", "Microsoft.Web/sites");
    error_with(
        &errors(&wrong_type),
        "storage_account is a Microsoft.Web/sites id",
    );
}

#[test]
fn syntax_errors_point_at_the_text() {
    let e = errors("storage_account = \"/subscriptions/x\n[[key_vault]]\n");
    assert!(!e.is_empty());
    assert_eq!(e[0].line, 1);
    assert!(hint(&e[0]).contains("TOML"), "{e:#?}");
}

#[test]
fn plan_errors_render_every_error_and_a_count() {
    let err = parse("bogus = 1\n", "plans/x.toml").unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with("plans/x.toml:1:1: unknown key `bogus` in the plan"),
        "{shown}"
    );
    assert!(shown.ends_with("plans/x.toml: 3 errors"), "{shown}");
    assert_eq!(err.origin(), "plans/x.toml");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_directory_with_two_plans_on_one_account_rejects_the_later() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", &minimal());
    let other_secret = minimal().replace("stacct01-key", "other");
    write(dir.path(), "b.toml", &other_secret);
    let other_account = minimal().replace("stacct01\"", "stacct02\"");
    write(dir.path(), "c.toml", &other_account);
    write(dir.path(), "notes.txt", "not a plan");

    let (plans, errors) = load_dir(dir.path());
    let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a"]);
    assert_eq!(errors.len(), 2);
    let b = &errors[0].errors()[0];
    assert!(b.file.ends_with("b.toml"), "{b}");
    assert_eq!(b.line, 1);
    assert!(b.message.contains("is already rotated by plan `a`"), "{b}");
    let c = &errors[1].errors()[0];
    assert!(c.message.contains("consumer `keyvault:https://kv.vault.azure.net/secrets/stacct01-key` is also in plan `a`"), "{c}");
}

#[test]
fn find_takes_a_name_or_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "datasci.toml", &minimal());
    assert_eq!(find(dir.path(), "datasci").unwrap().name, "datasci");
    assert_eq!(
        find(Path::new("/nonexistent"), path.to_str().unwrap())
            .unwrap()
            .name,
        "datasci"
    );
    let err = find(dir.path(), "datasic").unwrap_err();
    assert!(
        err.to_string().ends_with("did you mean `datasci`?"),
        "{err}"
    );
    let err = find(dir.path(), "zzz").unwrap_err();
    assert!(err.to_string().ends_with("plans there: datasci"), "{err}");
    write(dir.path(), "broken.toml", "storage_account = 1\n");
    assert!(matches!(
        find(dir.path(), "broken"),
        Err(FindError::Invalid(_))
    ));
}

/// Wide enough that no summary line wraps, ASCII marks.
fn show() -> check::Show {
    check::Show {
        output: crate::cli::Output::Human,
        term: crate::commands::term::Term::PLAIN.with_width(400),
    }
}

#[test]
fn plan_check_prints_summaries_and_errors_and_sets_the_exit_code() {
    let now: DateTime<Utc> = "2025-06-01T00:03:00Z".parse().unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let exit = check::run(
        &examples_dirs(),
        Path::new("/nowhere"),
        now,
        show(),
        &mut out,
        &mut err,
    )
    .unwrap();
    let (out, err) = (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    );
    assert_eq!(exit, Exit::Ok, "{out}{err}");
    assert!(err.is_empty(), "{err}");
    let demo = out.find("ok  demo  (").unwrap();
    let demo: Vec<&str> = out[demo..].lines().take(4).collect();
    assert!(demo[0].ends_with("rotation-plans/demo.toml)"), "{out}");
    assert_eq!(
        demo[1..],
        [
            "      account stdatasci001, 6 consumers + discovered datastores",
            "      cron \"*/10 * * * *\" UTC, grace 30s",
            "      next: 2025-06-01 00:10 UTC, 2025-06-01 00:20 UTC, 2025-06-01 00:30 UTC",
        ]
    );
    let age_only = out.find("account stordersprod").unwrap();
    assert!(
        out[age_only..]
            .lines()
            .nth(2)
            .unwrap()
            .ends_with("next: when the active key is 60d old"),
        "{out}"
    );
    assert!(out.ends_with("4 plans checked, all valid\n"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", &minimal());
    let bad = write(dir.path(), "bad.toml", "storage_account = \"x\"\n");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = check::run(
        &[good, bad],
        Path::new("/nowhere"),
        now,
        show(),
        &mut out,
        &mut err,
    )
    .unwrap();
    let (out, err) = (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    );
    assert_eq!(exit, Exit::Usage);
    assert!(
        out.starts_with("ok  good  (")
            && out.contains("\n      account stacct01, 1 consumer\n      on demand only"),
        "{out}"
    );
    assert!(
        err.contains("bad.toml:1:19: storage_account: 'x' is not an Azure resource id"),
        "{err}"
    );
    assert!(err.ends_with("1 valid, 1 invalid\n"), "{err}");
}

#[test]
fn plan_check_of_a_missing_path_fails() {
    let now: DateTime<Utc> = "2025-06-01T00:00:00Z".parse().unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = check::run(
        &[PathBuf::from("/nonexistent/plan.toml")],
        Path::new("/nowhere"),
        now,
        show(),
        &mut out,
        &mut err,
    )
    .unwrap();
    assert_eq!(exit, Exit::Usage);
    let err = String::from_utf8(err).unwrap();
    assert!(
        err.starts_with("/nonexistent/plan.toml: cannot read the plan: "),
        "{err}"
    );
    assert!(err.ends_with("0 valid, 1 invalid\n"), "{err}");
}

#[test]
fn webhooks_take_a_format_a_signing_key_file_and_the_new_events() {
    let text = format!(
        "{}\n[[notify]]\nwebhook = \"https://hooks.slack.com/services/T/B/x\"\nformat = \"slack\"\nevents = [\"completed\", \"rolled-back\", \"usage-gate-hold\"]\n\n[[notify]]\nwebhook = \"https://hooks.example.com/k\"\nsecret_file = \"/etc/keyflip/webhook.secret\"\n",
        minimal()
    );
    let plan = parse(&text, "plans/x.toml").unwrap();
    let (slack, json) = (&plan.notify[0], &plan.notify[1]);
    assert_eq!(slack.format, WebhookFormat::Slack);
    assert!(slack.wants(NotifyEvent::Completed) && !slack.wants(NotifyEvent::Drift));
    assert_eq!(json.format, WebhookFormat::Json);
    assert_eq!(
        json.secret_file.as_deref(),
        Some(Path::new("/etc/keyflip/webhook.secret"))
    );
    // Without `events`: everything but routine completions; `failure` covers
    // rollbacks.
    assert!(!json.wants(NotifyEvent::Completed) && json.wants(NotifyEvent::RolledBack));
    let failure_only = Webhook {
        events: vec![NotifyEvent::Failure],
        ..json.clone()
    };
    assert!(failure_only.wants(NotifyEvent::RolledBack));

    let bad = format!(
        "{}\n[[notify]]\nwebhook = \"https://h.example.com/k\"\nformat = \"discord\"\nsecret_file = \"webhook.secret\"\n",
        minimal()
    );
    let err = parse(&bad, "plans/x.toml").unwrap_err().to_string();
    assert!(err.contains("unknown webhook format `discord`"), "{err}");
    assert!(
        err.contains("secret_file `webhook.secret` is not an absolute path"),
        "{err}"
    );
}

#[test]
fn plan_files_are_listed_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "b.toml",
        "a.toml",
        "a-b.toml",
        "A.toml",
        "a_b.toml",
        "notes.txt",
    ] {
        std::fs::write(dir.path().join(name), "").unwrap();
    }
    let files = super::plan_files(dir.path()).unwrap();
    let mut by_path = files.clone();
    by_path.sort();
    assert_eq!(files, by_path);
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["A.toml", "a-b.toml", "a.toml", "a_b.toml", "b.toml"]
    );
}
