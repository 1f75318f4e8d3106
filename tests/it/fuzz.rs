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
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
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
