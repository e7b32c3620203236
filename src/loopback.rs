//! Loopback-only network namespaces, so that LSL tests, benchmarks and demos can run on shared
//! machines and in CI without a single packet leaving the machine.
//!
//! liblsl discovers streams by UDP multicast and broadcast on every interface. Inside a fresh
//! network namespace (`unshare -n`) with only `lo` up, and with an LSL configuration that
//! resolves on the machine only, there is nowhere else for it to go. Our integration tests
//! re-run themselves through [`command`] and refuse to open LSL anywhere else
//! ([`require`]). A user on a lab network does not need any of this: the product itself uses
//! liblsl's normal defaults.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// liblsl configuration for machine-only discovery (keys valid for liblsl 1.13–1.18).
/// `KnownPeers` lets a resolve see several outlet processes; the tuning lines cut a resolve
/// from about 1.25 s to about 0.1 s.
pub const LSL_CONFIG: &str = "\
[ports]
IPv6 = disable
[multicast]
ResolveScope = machine
AddressesOverride = {127.0.0.1}
TTLOverride = 0
[lab]
KnownPeers = {127.0.0.1}
[tuning]
MulticastMinRTT = 0.05
UnicastMinRTT = 0.05
";

/// Set in the environment of a process started by [`command`].
pub const MARKER_VARIABLE: &str = "NEUROSTREAM_LOOPBACK_NETNS";

/// Network interfaces of this process's network namespace. Read from `/proc/self/net/dev`,
/// which follows the namespace; `/sys/class/net` shows the namespace sysfs was mounted in.
pub fn interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/self/net/dev")
        .map(|table| {
            table
                .lines()
                .skip(2)
                .filter_map(|line| line.split_once(':'))
                .map(|(name, _)| name.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// True when the only network interface is `lo`.
pub fn is_loopback_only() -> bool {
    let interfaces = interfaces();
    !interfaces.is_empty() && interfaces.iter().all(|i| i == "lo")
}

/// Refuse to go on unless this process is in a loopback-only namespace with the loopback LSL
/// configuration.
pub fn require() -> Result<()> {
    if !is_loopback_only() {
        return Err(Error::Unsupported(format!(
            "refusing to open LSL: this process sees network interfaces {:?}; run it through \
             neurostream::loopback::command (or scripts/loopback)",
            interfaces()
        )));
    }
    match std::env::var_os("LSLAPICFG") {
        Some(path) if Path::new(&path).is_file() => Ok(()),
        _ => Err(Error::Unsupported(
            "refusing to open LSL: LSLAPICFG does not point at a loopback-only LSL configuration"
                .into(),
        )),
    }
}

/// Write [`LSL_CONFIG`] into `dir` and return its path.
pub fn write_lsl_config(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("lsl_api.cfg");
    std::fs::write(&path, LSL_CONFIG).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// `program args...` wrapped so that it runs in a new network namespace with only `lo` up and
/// `LSLAPICFG` set. Uses `unshare -n` as root, else `unshare -rn` (an unprivileged user
/// namespace); errors when neither works here.
pub fn command(program: &Path, args: &[String]) -> Result<Command> {
    let config = write_lsl_config(&std::env::temp_dir().join("neurostream-loopback"))?;
    let flags = unshare_flags()?;
    let mut command = Command::new("unshare");
    command
        .arg(flags)
        .args(["sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(program)
        .args(args)
        .env("LSLAPICFG", config)
        .env(MARKER_VARIABLE, "1");
    Ok(command)
}

fn unshare_flags() -> Result<&'static str> {
    for flags in ["-n", "-rn"] {
        let works = Command::new("unshare")
            .args([flags, "sh", "-c", "ip link set lo up"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if works {
            return Ok(flags);
        }
    }
    Err(Error::Unsupported(
        "cannot create a loopback-only network namespace here: `unshare -n` (root) and \
         `unshare -rn` (user namespaces) both failed; LSL tests refuse to run without one"
            .into(),
    ))
}
