//! `neurostream fetch eegmmidb` against a PhysioNet stand-in on 127.0.0.1: a small HTTP
//! server (std only, one thread) serving the EEGMMIDB files of `$NEUROSTREAM_DATA` under
//! PhysioNet's layout, with a SHA256SUMS.txt made from the data folder's own SHA256SUMS.
//! It can corrupt or truncate chosen files and counts every request.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const BIN: &str = env!("CARGO_BIN_EXE_neurostream");
const PREFIX: &str = "/files/eegmmidb/1.0.0";

#[derive(Clone, Copy, PartialEq)]
enum Damage {
    None,
    /// One byte flipped: right length, wrong content.
    Corrupt,
    /// Content-Length of the whole file, half the bytes, then the connection closes.
    Truncate,
}

struct Server {
    base_url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(data: &Path, damaged: &[&str], damage: Damage) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}{PREFIX}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sums: String = std::fs::read_to_string(data.join("SHA256SUMS"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let (hash, name) = l.split_once("  ")?;
                Some(format!("{hash}  {}\n", name.strip_prefix("eegmmidb/")?))
            })
            .collect();
        let root = data.join("eegmmidb");
        let damaged: BTreeSet<String> = damaged.iter().map(|s| s.to_string()).collect();
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = serve(stream, &root, &sums, &damaged, damage, &log);
            }
        });
        Server { base_url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(
    mut stream: TcpStream,
    root: &Path,
    sums: &str,
    damaged: &BTreeSet<String>,
    damage: Damage,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    log.lock().unwrap().push(path.clone());
    let name = path.strip_prefix(PREFIX).and_then(|p| p.strip_prefix('/'));
    let body = match name {
        Some("SHA256SUMS.txt") => Some(sums.as_bytes().to_vec()),
        Some(name) if !name.contains("..") => std::fs::read(root.join(name)).ok(),
        _ => None,
    };
    let Some(mut body) = body else {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let length = body.len();
    if name.is_some_and(|n| damaged.contains(n)) {
        match damage {
            Damage::Corrupt => body[length / 2] ^= 0x55,
            Damage::Truncate => body.truncate(length / 2),
            Damage::None => {}
        }
    }
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    )?;
    stream.write_all(&body)?;
    stream.flush()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("neurostream-fetch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fetch(server: &Server, cache: &Path, runs: &[&str]) -> Output {
    Command::new(BIN)
        .args([
            "fetch",
            "eegmmidb",
            "--subject",
            "1",
            "--base-url",
            &server.base_url,
            "--cache",
        ])
        .arg(cache)
        .arg("--runs")
        .args(runs)
        .env_remove("NEUROSTREAM_CACHE")
        .output()
        .unwrap()
}

/// Every file name under `dir`, recursively (to check that no partial download is left).
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files(&path));
            } else {
                out.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn downloads_verifies_and_does_not_download_cached_files_again() {
    let Some(data) = common::data_dir() else {
        return;
    };
    let server = Server::start(&data, &[], Damage::None);
    let cache = scratch("ok");
    let out = fetch(&server, &cache, &["4", "8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for run in ["S001R04.edf", "S001R08.edf"] {
        let got = std::fs::read(cache.join("eegmmidb/S001").join(run)).unwrap();
        let want = std::fs::read(data.join("eegmmidb/S001").join(run)).unwrap();
        assert!(got == want, "{run} differs from the served file");
    }
    assert_eq!(
        server.requests(),
        [
            format!("{PREFIX}/SHA256SUMS.txt"),
            format!("{PREFIX}/S001/S001R04.edf"),
            format!("{PREFIX}/S001/S001R08.edf"),
        ]
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 downloaded, 0 already cached"));

    // Again: everything is cached and verified, nothing is requested.
    let out = fetch(&server, &cache, &["4", "8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 downloaded, 2 already cached"));
    assert_eq!(server.requests().len(), 3);

    // A cached file damaged on disk is noticed and downloaded again.
    let damaged = cache.join("eegmmidb/S001/S001R08.edf");
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&damaged, bytes).unwrap();
    let out = fetch(&server, &cache, &["4", "8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.requests().len(), 4);
    assert_eq!(server.requests()[3], format!("{PREFIX}/S001/S001R08.edf"));
    assert!(
        std::fs::read(&damaged).unwrap()
            == std::fs::read(data.join("eegmmidb/S001/S001R08.edf")).unwrap()
    );
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn a_corrupted_download_is_an_error_and_leaves_no_file() {
    let Some(data) = common::data_dir() else {
        return;
    };
    let server = Server::start(&data, &["S001/S001R04.edf"], Damage::Corrupt);
    let cache = scratch("corrupt");
    let out = fetch(&server, &cache, &["4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("S001/S001R04.edf") && err.contains("SHA-256") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(files(&cache.join("eegmmidb")), ["SHA256SUMS.txt"]);
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn a_truncated_download_is_an_error_and_leaves_no_file() {
    let Some(data) = common::data_dir() else {
        return;
    };
    let server = Server::start(&data, &["S001/S001R12.edf"], Damage::Truncate);
    let cache = scratch("truncate");
    let out = fetch(&server, &cache, &["4", "12"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("S001/S001R12.edf"), "{err}");
    // R04 came before and is complete and verified; nothing of R12 is left.
    assert_eq!(
        files(&cache.join("eegmmidb")),
        ["S001R04.edf", "SHA256SUMS.txt"]
    );
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn out_of_range_subjects_and_runs_are_refused_before_any_download() {
    let cache = scratch("range");
    for (flag, value, allowed) in [
        ("--subject", "110", "1 to 109"),
        ("--runs", "15", "1 to 14"),
    ] {
        let mut args = vec!["fetch", "eegmmidb", "--subject", "1", "--runs", "4"];
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = value;
        let out = Command::new(BIN)
            .args(&args)
            .arg("--cache")
            .arg(&cache)
            .args(["--base-url", "http://127.0.0.1:9/unused"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(value) && err.contains(allowed), "{err}");
    }
    assert!(files(&cache).is_empty());
    let _ = std::fs::remove_dir_all(cache);
}
