//! Trust comes from keyflip.toml only, and a certificate keyflip does not trust is a
//! permanent error that says so: not minutes of retries ending in "retry policy
//! expired", and not trust added behind the configuration's back by `SSL_CERT_FILE`.

use std::time::{Duration, Instant};

use crate::support::binary::Cli;
use crate::support::twin::OPERATOR;

/// keyflip.toml for the twin without `ca_bundle`: the twin's CA is not trusted.
fn without_ca(cli: &Cli) -> std::path::PathBuf {
    let path = cli.write_config("no-ca.toml", OPERATOR);
    let text = std::fs::read_to_string(&path).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("ca_bundle"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn an_untrusted_certificate_fails_at_once_and_names_the_problem() {
    let cli = Cli::start().await;
    let config = without_ca(&cli);
    let ca = cli.twin.dir.path().join("ca.pem");
    for ssl_cert_file in [None, Some(&ca)] {
        let mut cmd = cli.command(&config, &["status"]);
        cmd.env_remove("SSL_CERT_DIR");
        match ssl_cert_file {
            // The twin's CA offered through the environment is not trusted either.
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        let started = Instant::now();
        let run = cli.run_cmd(cmd).await;
        let took = started.elapsed();
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        let base = &cli.twin.endpoints.base_url;
        assert!(
            run.stdout
                .contains(&format!("the server certificate of {base} is not accepted"))
                || run
                    .stderr
                    .contains(&format!("the server certificate of {base} is not accepted")),
            "SSL_CERT_FILE={ssl_cert_file:?}\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            all.contains("certificate authority keyflip does not trust")
                && all.contains("ca_bundle"),
            "{all}"
        );
        assert!(took < Duration::from_secs(20), "took {took:?}: retried?");
    }
    // Nothing went past the TLS handshake.
    assert!(cli.twin.requests().await.is_empty());
}
