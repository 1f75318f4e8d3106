//! Snapshot files under `tests/it/snapshots/`, compared whole. `UPDATE_SNAPSHOTS=1`
//! (or a missing file) writes the snapshot and fails, so a new one is looked at
//! before it is trusted.

use std::path::Path;

/// Compares `actual` with `tests/it/snapshots/{name}.txt`; the error says how.
pub fn check(name: &str, actual: &str) -> Result<(), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/snapshots")
        .join(format!("{name}.txt"));
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    match std::fs::read_to_string(&path) {
        Ok(expected) if !update => {
            if expected == actual {
                Ok(())
            } else {
                Err(format!(
                    "{} differs (UPDATE_SNAPSHOTS=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
                    path.display()
                ))
            }
        }
        _ => {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            if update {
                Ok(())
            } else {
                Err(format!(
                    "wrote a new snapshot {}; review it and run again",
                    path.display()
                ))
            }
        }
    }
}
