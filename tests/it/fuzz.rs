//! The fuzz targets' inputs replayed as ordinary tests: every seed in
//! `fuzz/corpus/TARGET/` and every input that ever crashed a target, kept in
//! `fuzz/regressions/TARGET/`, goes through the same `keyflip::fuzzing` function the
//! target calls (so a crash fixed once stays fixed). Running the fuzzers themselves is
//! `fuzz/run` (see `fuzz/README.md`).

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("plan_parse", keyflip::fuzzing::plan_parse),
    ("config_parse", keyflip::fuzzing::config_parse),
    ("control_protocol", keyflip::fuzzing::control_protocol),
    ("azure_responses", keyflip::fuzzing::azure_responses),
    ("shared_key", keyflip::fuzzing::shared_key),
];

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_seed_and_every_past_crash_is_handled() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let seeds = inputs(&fuzz.join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} has no seeds");
        for file in seeds
            .iter()
            .chain(inputs(&fuzz.join("regressions").join(name)).iter())
        {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", file.display());
            replayed += 1;
        }
    }
    eprintln!("{replayed} fuzz inputs replayed");
}

/// A deterministic generator (xorshift64*): the same seed gives the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Fragments that tend to reach parser edge cases: TOML and JSON structure, huge and
/// negative numbers, control characters, long runs.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"'",
    b"[",
    b"]]",
    b"{",
    b"}",
    b"=",
    b"\n",
    b"\r\n",
    b"\0",
    b"\\u0000",
    b"1e308",
    b"-1",
    b"18446744073709551616",
    b"NaN",
    b"[[consumer]]",
    b"[cloud]",
    b"null",
    b"true",
    b"\"v\":",
    b"\xff\xfe",
    b"https://",
    b"?a=b",
    b"user:pw@",
];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.insert(at, rng.next() as u8),
            2 if at < data.len() => {
                let end = (at + 1 + rng.below(32)).min(data.len());
                data.drain(at..end);
            }
            3 if at < data.len() => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                let copy = data[at..end].to_vec();
                let to = rng.below(data.len() + 1);
                data.splice(to..to, copy);
            }
            4 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            _ if !other.is_empty() => {
                // Splice in a piece of another seed of the same target.
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(128)).min(other.len());
                data.splice(at..at, other[from..end].iter().copied());
            }
            _ => {}
        }
    }
    data
}

/// The stable-Rust stand-in for libFuzzer in CI: every seed of every target is
/// mutated (bit flips, insertions, deletions, duplications, tokens, splices with other
/// seeds) for a bounded time, with a fixed seed so a failure reproduces
/// (`KEYFLIP_MUTATION_SEED`, `KEYFLIP_MUTATION_SECS` per target, default 3). A
/// panicking input is written to `target/fuzz-failures/` for `fuzz/regressions/`.
#[test]
fn seeded_mutations_of_every_corpus_are_errors_not_panics() {
    let seed = std::env::var("KEYFLIP_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b65_7966_6c69_7021_u64);
    let budget = std::time::Duration::from_secs_f64(
        std::env::var("KEYFLIP_MUTATION_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3.0),
    );
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut report = Vec::new();
    for (name, target) in TARGETS {
        let seeds: Vec<Vec<u8>> = inputs(&fuzz.join("corpus").join(name))
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        let mut rng = Rng(seed ^ name.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
        let started = std::time::Instant::now();
        let mut runs = 0u64;
        while started.elapsed() < budget {
            let base = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            let data = mutate(&mut rng, base, other);
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
                std::fs::create_dir_all(&dir).unwrap();
                let file = dir.join(format!("{name}-{seed:x}-{runs}"));
                std::fs::write(&file, &data).unwrap();
                panic!(
                    "{name}: mutation {runs} of seed {seed:#x} panicked; the input is {} (copy it to fuzz/regressions/{name}/)",
                    file.display()
                );
            }
            runs += 1;
        }
        report.push(format!("{name} {runs}"));
    }
    eprintln!("mutations (seed {seed:#x}): {}", report.join(", "));
}
