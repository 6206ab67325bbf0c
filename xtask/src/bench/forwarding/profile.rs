//! `--profile`: `perf record` on the router's CPU while the generator sends, then the router
//! NAPI thread's hottest symbols written next to the raw data, one pair of files per run. It
//! answers where a forwarder's nanoseconds per packet go (program, devmap, veth, wake-ups).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::Context;

use super::cpu::ROUTER_CPU;
use crate::output;

/// Debian's `perf`, installed by the bench when `--profile` is given.
pub const PERF: &str = "/usr/bin/perf";
/// Symbols kept in each text report.
const TOP: usize = 30;

/// A running `perf record`; [`Recording::finish`] stops it and writes the report.
pub struct Recording {
    child: Child,
    data: PathBuf,
    napi: Vec<libc::pid_t>,
}

/// Starts recording CPU [`ROUTER_CPU`] into `dir/<name>.data`; the report keeps the samples of
/// the `napi` threads, or of the whole CPU with none.
///
/// # Errors
/// The directory cannot be made or perf does not start.
pub fn start(dir: &Path, name: &str, napi: &[libc::pid_t]) -> anyhow::Result<Recording> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let data = dir.join(format!("{name}.data"));
    let child = Command::new(PERF)
        .args(["record", "-q", "-C", &ROUTER_CPU.to_string(), "-o"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {PERF}"))?;
    // perf needs a moment to open its events; samples before that would be lost.
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(Recording {
        child,
        data,
        napi: napi.to_vec(),
    })
}

impl Recording {
    /// Stops perf and writes `<name>.txt`: the share of the router NAPI thread's samples (or
    /// the CPU's) per symbol, hottest first.
    ///
    /// # Errors
    /// perf failed to stop or to report.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        // SAFETY: signalling our own child by pid; SIGINT makes perf flush its data.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().context("perf record did not stop")?;
        let pids: Vec<String> = self.napi.iter().map(|p| p.to_string()).collect();
        let mut report = Command::new(PERF);
        report.args(["report", "--stdio", "--no-children", "--sort", "sym"]);
        if !pids.is_empty() {
            report.args(["--tid", &pids.join(",")]);
        }
        let report = output(report.arg("-i").arg(&self.data))?;
        let top: Vec<&str> = report
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(TOP)
            .collect();
        let text = self.data.with_extension("txt");
        fs::write(&text, top.join("\n") + "\n")
            .with_context(|| format!("write {}", text.display()))?;
        Ok(text)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
