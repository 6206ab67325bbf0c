//! What the running kernel offers that tests and benchmarks depend on, and how a test that
//! cannot run on it says so: a skipped test is never silently green.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

/// The environment variable naming the file in which `cargo xtask test` collects the skips of
/// one run.
pub const SKIP_LOG_ENV: &str = "MGM_SKIP_LOG";

/// The reason given by every test that needs the kernel's multicast routing where it is missing.
pub const NO_IPMR: &str = "this kernel has no multicast routing (CONFIG_IP_MROUTE)";

/// Whether the kernel has multicast routing (`CONFIG_IP_MROUTE`), which igmpproxy, smcroute and
/// pimd forward with. Its proc file exists in every namespace when it is built in or loaded.
pub fn has_ipmr() -> bool {
    Path::new("/proc/net/ip_mr_vif").exists()
}

/// Announces that `test` did not run, for `reason`: one line on standard error written past
/// the test harness's capture (so it shows in a passing run), and one in the skip log of
/// `cargo xtask test`, which counts them at the end.
pub fn announce_skip(test: &str, reason: &str) {
    let line = format!("{test}: skipped: {reason}\n");
    // Straight to the file descriptor: the harness captures only the print macros.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            let _ = writeln!(
                std::io::stderr(),
                "cannot record the skip in {}: {e}",
                PathBuf::from(path).display()
            );
        }
    }
}
