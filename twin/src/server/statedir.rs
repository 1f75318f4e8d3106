//! Files a twin writes into its state directory: `ca.pem`, `principals/<name>.secret`
//! (mode 0600, the client secret and a newline) and `endpoints.json`, which is written
//! to a temporary name and renamed so that readers never see half a file.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::TwinError;
use crate::endpoints::Endpoints;
use crate::state::Directory;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TwinError + '_ {
    move |source| TwinError::StateDir {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn write_ca(dir: &Path, pem: &str) -> Result<PathBuf, TwinError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join("ca.pem");
    fs::write(&path, pem).map_err(io_err(&path))?;
    Ok(fs::canonicalize(&path).unwrap_or(path))
}

pub(super) fn write_principals(dir: &Path, directory: &Directory) -> Result<(), TwinError> {
    let pdir = dir.join("principals");
    fs::create_dir_all(&pdir).map_err(io_err(&pdir))?;
    for p in &directory.principals {
        let path = pdir.join(format!("{}.secret", p.name));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        writeln!(f, "{}", p.client_secret).map_err(io_err(&path))?;
    }
    Ok(())
}

pub(super) fn write_endpoints(dir: &Path, endpoints: &Endpoints) -> Result<(), TwinError> {
    let tmp = dir.join(".endpoints.json.tmp");
    let path = dir.join("endpoints.json");
    let text = serde_json::to_string_pretty(endpoints)
        .map_err(|e| io_err(&path)(std::io::Error::other(e)))?;
    fs::write(&tmp, text + "\n").map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(())
}
