//! `neurostream fetch eegmmidb --subject N [--runs 4 8 12]`: download subjects of PhysioNet's
//! EEG Motor Movement/Imagery Database into a local cache, checking every file against the
//! SHA-256 sums PhysioNet publishes (`SHA256SUMS.txt` at the top of the database).
//!
//! The cache has the layout of `$NEUROSTREAM_DATA` (`CACHE/eegmmidb/S001/S001R04.edf`), so
//! it can be used as one. A file is downloaded to a temporary name beside its final one and
//! renamed only once its checksum matches: a corrupt, truncated or interrupted download
//! leaves nothing under the final name. Files already cached with the right checksum are
//! not downloaded again; the sums file itself is cached (the database version is fixed).
//!
//! Downloads go through the `curl` program (HTTPS with the system's certificates and
//! proxies), which keeps a TLS stack out of this crate for one rarely used command.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, ValueEnum};
use neurostream::{Error, Result};
use sha2::{Digest, Sha256};

/// EEGMMIDB has subjects S001 to S109...
const SUBJECTS: std::ops::RangeInclusive<u32> = 1..=109;
/// ...each with runs R01 to R14.
const RUNS: std::ops::RangeInclusive<u32> = 1..=14;
const SUMS_FILE: &str = "SHA256SUMS.txt";

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Dataset {
    /// PhysioNet EEG Motor Movement/Imagery Database 1.0.0 (ODC-By 1.0; cite Schalk et al.
    /// 2004 and Goldberger et al. 2000).
    Eegmmidb,
}

#[derive(Args)]
pub struct FetchArgs {
    pub dataset: Dataset,
    /// Subject number(s), 1–109.
    #[arg(long, required = true, num_args = 1..)]
    pub subject: Vec<u32>,
    /// Run numbers, 1–14 (default: the left/right fist imagery runs).
    #[arg(long, num_args = 1.., default_values_t = [4, 8, 12])]
    pub runs: Vec<u32>,
    /// Cache folder (default: $NEUROSTREAM_CACHE, else $XDG_CACHE_HOME/neurostream, else
    /// ~/.cache/neurostream). Point NEUROSTREAM_DATA at it to use the files in tests.
    #[arg(long, env = "NEUROSTREAM_CACHE")]
    pub cache: Option<PathBuf>,
    /// Where the database is served.
    #[arg(long, default_value = "https://physionet.org/files/eegmmidb/1.0.0")]
    pub base_url: String,
}

pub fn run(args: FetchArgs) -> Result<()> {
    let Dataset::Eegmmidb = args.dataset;
    for &subject in &args.subject {
        if !SUBJECTS.contains(&subject) {
            return Err(Error::config(
                "--subject",
                format!("{subject} is not an EEGMMIDB subject; allowed: 1 to 109"),
            ));
        }
    }
    for &run in &args.runs {
        if !RUNS.contains(&run) {
            return Err(Error::config(
                "--runs",
                format!("{run} is not an EEGMMIDB run; allowed: 1 to 14"),
            ));
        }
    }
    let cache = match &args.cache {
        Some(dir) => dir.clone(),
        None => default_cache()?,
    };
    let root = cache.join("eegmmidb");
    let base = args.base_url.trim_end_matches('/');
    let sums = load_sums(&root, base)?;
    let (mut fetched, mut cached) = (0, 0);
    for &subject in &args.subject {
        for &run in &args.runs {
            let name = format!("S{subject:03}/S{subject:03}R{run:02}.edf");
            let expected = sums
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(h, _)| h.as_str());
            let expected = expected.ok_or_else(|| {
                Error::Data(format!(
                    "{} has no entry for {name}; cannot verify it, so it is not downloaded",
                    root.join(SUMS_FILE).display()
                ))
            })?;
            let target = root.join(&name);
            if target.is_file() {
                if sha256_file(&target)? == expected {
                    tracing::info!("{name}: cached and verified");
                    cached += 1;
                    continue;
                }
                tracing::warn!("{name}: cached copy has the wrong SHA-256; downloading again");
            }
            download_verified(&format!("{base}/{name}"), &target, expected)?;
            tracing::info!("{name}: downloaded and verified");
            fetched += 1;
        }
    }
    println!(
        "eegmmidb: {fetched} downloaded, {cached} already cached, all verified in {} (use it with NEUROSTREAM_DATA={})",
        root.display(),
        cache.display()
    );
    Ok(())
}

fn default_cache() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("neurostream"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".cache/neurostream"))
        .ok_or_else(|| {
            Error::config(
                "--cache",
                "no cache folder: HOME is not set; give --cache DIR",
            )
        })
}

/// The sums file as `(sha256, relative path)` pairs, from the cache or downloaded into it.
fn load_sums(root: &Path, base: &str) -> Result<Vec<(String, String)>> {
    let path = root.join(SUMS_FILE);
    if !path.is_file() {
        // Nothing to verify the sums file against: it comes over HTTPS from the same server.
        let url = format!("{base}/{SUMS_FILE}");
        let part = part_path(&path);
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let downloaded = curl(&url, &part).and_then(|()| {
            let text = std::fs::read_to_string(&part).map_err(|e| Error::io(&part, e))?;
            parse_sums(&text, &url).map(|_| ())
        });
        if let Err(e) = downloaded {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
        std::fs::rename(&part, &path).map_err(|e| Error::io(&path, e))?;
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    parse_sums(&text, &path.display().to_string())
}

/// `sha256sum` output: 64 hex digits, whitespace (and `*` for binary mode), a path.
fn parse_sums(text: &str, origin: &str) -> Result<Vec<(String, String)>> {
    let mut sums = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = line
            .split_once(char::is_whitespace)
            .and_then(|(hash, name)| {
                let name = name.trim_start().trim_start_matches('*').trim_end();
                (hash.len() == 64
                    && hash.bytes().all(|b| b.is_ascii_hexdigit())
                    && !name.is_empty())
                .then(|| (hash.to_ascii_lowercase(), name.to_string()))
            });
        match parsed {
            Some(entry) => sums.push(entry),
            None => {
                return Err(Error::Data(format!(
                    "{origin} line {}: {line:?} is not `SHA256  path`; not a SHA256SUMS file",
                    i + 1
                )))
            }
        }
    }
    if sums.is_empty() {
        return Err(Error::Data(format!("{origin}: no checksums in it")));
    }
    Ok(sums)
}

/// Download `url` beside `target`, check its SHA-256 and only then move it into place.
fn download_verified(url: &str, target: &Path, expected: &str) -> Result<()> {
    let dir = target.parent().expect("cache files live in a folder");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let part = part_path(target);
    let result = curl(url, &part).and_then(|()| {
        let actual = sha256_file(&part)?;
        if actual != expected {
            return Err(Error::Data(format!(
                "{url}: SHA-256 is {actual} but SHA256SUMS.txt says {expected}: the download is corrupt or truncated; nothing was kept in the cache"
            )));
        }
        std::fs::rename(&part, target).map_err(|e| Error::io(target, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// Temporary name beside `target`, unique per process so two fetches cannot mix their bytes.
fn part_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.part-{}", std::process::id()))
}

fn curl(url: &str, out: &Path) -> Result<()> {
    let output = Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location", "--retry", "2"])
        .arg("--output")
        .arg(out)
        .arg(url)
        .output()
        .map_err(|e| {
            Error::Unsupported(format!(
                "cannot run curl ({e}): `neurostream fetch` downloads with the curl program; install it (e.g. apt-get install curl)"
            ))
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Network(format!(
        "downloading {url} failed (curl {}): {}",
        output
            .status
            .code()
            .map_or("killed".into(), |c| format!("exit {c}")),
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
