//! Runs `mgm` inside a lab's router namespace and keeps its log. The process is stopped with
//! SIGTERM (then SIGKILL) when the guard drops, and its pin directory is removed.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use super::{Lab, Netns, UPSTREAM};

/// Native XDP and short IGMP timers for the tests' daemons: startup queries every 0.5 s, then
/// every 2 s, and leaves after two 100 ms last-member queries, so a host whose report was lost
/// reports again within a test.
pub const FAST_IGMP: [&str; 8] = [
    "--xdp-mode",
    "native",
    "--igmp-last-member-interval-ms",
    "100",
    "--igmp-query-interval",
    "2",
    "--igmp-query-response-ms",
    "500",
];

/// The `mgm` binary the tests run: `MGM_BIN`, which `cargo xtask test` sets after building.
///
/// # Panics
/// `MGM_BIN` is not set or names no file: the message says how to run the tests.
pub fn mgm_bin() -> PathBuf {
    let path = std::env::var_os("MGM_BIN").map(PathBuf::from).expect(
        "MGM_BIN is not set: run these tests with `cargo xtask test`, which builds mgm first",
    );
    assert!(path.is_file(), "MGM_BIN={} does not exist", path.display());
    path
}

/// A running `mgm run` for one lab.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    pin_dir: PathBuf,
    mgm: PathBuf,
    netns: String,
    /// Leave the pins for the next daemon (after [`Daemon::crash`]).
    keep_pins: bool,
}

impl Daemon {
    /// Starts `mgm` as the lab's router, an IGMP proxy with the lab's upstream and
    /// downstreams, with `extra` arguments, pinning under `pin_dir`, and waits until it reports
    /// it is running. With `echo`, its log is also printed live.
    ///
    /// # Errors
    /// It could not start, exited, or was not ready within 20 s; the error holds its log.
    pub fn start(
        mgm: &Path,
        lab: &Lab,
        pin_dir: &Path,
        extra: &[&str],
        echo: bool,
    ) -> anyhow::Result<Daemon> {
        let downstreams = lab.downstreams();
        let mut roles = vec!["--upstream", UPSTREAM, "--downstream"];
        roles.extend(downstreams.iter().map(String::as_str));
        Self::start_as(mgm, lab, pin_dir, &roles, extra, echo)
    }

    /// Like [`Daemon::start`], with the interface roles (`--upstream`, `--downstream`,
    /// `--external`) given in `roles`.
    ///
    /// # Errors
    /// As for [`Daemon::start`].
    pub fn start_as(
        mgm: &Path,
        lab: &Lab,
        pin_dir: &Path,
        roles: &[&str],
        extra: &[&str],
        echo: bool,
    ) -> anyhow::Result<Daemon> {
        Self::start_in(mgm, &lab.router, pin_dir, roles, extra, echo)
    }

    /// Like [`Daemon::start_as`], in the namespace `router` of a topology of the test's own.
    ///
    /// # Errors
    /// As for [`Daemon::start`].
    pub fn start_in(
        mgm: &Path,
        router: &Netns,
        pin_dir: &Path,
        roles: &[&str],
        extra: &[&str],
        echo: bool,
    ) -> anyhow::Result<Daemon> {
        let mut cmd = Command::new(mgm);
        cmd.args(["run", "--netns", router.name()])
            .args(roles)
            .arg("--pin-dir")
            .arg(pin_dir)
            .arg("--socket")
            .arg(socket_for(pin_dir))
            .arg("--control-socket")
            .arg(control_socket_for(pin_dir))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", mgm.display()))?;
        let log = keep_output(&mut child, echo.then_some("mgm"));
        let mut daemon = Daemon {
            child,
            log,
            pin_dir: pin_dir.to_owned(),
            mgm: mgm.to_owned(),
            netns: router.name().to_owned(),
            keep_pins: false,
        };
        daemon.wait_for("mgm running", Duration::from_secs(20))?;
        Ok(daemon)
    }

    /// Waits until a log line contains `needle`.
    ///
    /// # Errors
    /// The daemon exited or `timeout` passed; the error holds the log.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if self.log().iter().any(|l| l.contains(needle)) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "mgm exited ({status}) before logging {needle:?}:\n{}",
                    self.log().join("\n")
                );
            }
            if Instant::now() > end {
                bail!(
                    "mgm did not log {needle:?} within {timeout:?}:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every line logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What `mgm show --json` says about this daemon.
    ///
    /// # Errors
    /// `mgm show` failed or printed something that is not JSON.
    pub fn show(&self) -> anyhow::Result<serde_json::Value> {
        let out = crate::output(
            Command::new(&self.mgm)
                .args(["show", "--json", "--netns", &self.netns, "--pin-dir"])
                .arg(&self.pin_dir),
        )?;
        serde_json::from_str(&out).context("mgm show --json printed invalid JSON")
    }

    /// Asks the daemon over its control socket: `mgm ARGS --control-socket PATH`, e.g.
    /// `["show", "groups", "--json"]` or `["join", "dn1", "239.1.1.1"]`. Returns whether it
    /// succeeded, and what it printed on stdout and stderr.
    ///
    /// # Errors
    /// `mgm` could not be run.
    pub fn control(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let out = Command::new(&self.mgm)
            .args(args)
            .arg("--control-socket")
            .arg(self.control_socket())
            .output()
            .with_context(|| format!("cannot run {}", self.mgm.display()))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// What `mgm show VIEW --json` answers.
    ///
    /// # Errors
    /// `mgm show` failed or printed something that is not JSON.
    pub fn show_view(&self, view: &str) -> anyhow::Result<serde_json::Value> {
        let (ok, out, err) = self.control(&["show", view, "--json"])?;
        if !ok {
            bail!("mgm show {view} failed: {err}");
        }
        serde_json::from_str(&out).with_context(|| format!("mgm show {view} --json: {out}"))
    }

    /// Where operators' commands reach this daemon.
    pub fn control_socket(&self) -> PathBuf {
        control_socket_for(&self.pin_dir)
    }

    /// The daemon's process id, for reading its /proc entries.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the daemon to reload its configuration file (SIGHUP).
    pub fn hang_up(&self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }

    /// Where the maps are pinned.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Where modules connect to this daemon.
    pub fn socket(&self) -> PathBuf {
        socket_for(&self.pin_dir)
    }

    /// Stops the daemon with SIGTERM and returns its exit status and log.
    ///
    /// # Errors
    /// It did not exit within 10 s (it is then killed).
    pub fn stop(mut self) -> anyhow::Result<(std::process::ExitStatus, Vec<String>)> {
        let status = self.terminate()?;
        std::thread::sleep(Duration::from_millis(100));
        Ok((status, self.log()))
    }

    /// Kills the daemon with SIGKILL, as a crash would, leaving its pins for the next one.
    /// Returns its log.
    pub fn crash(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.keep_pins = true;
        std::thread::sleep(Duration::from_millis(100));
        self.log()
    }

    /// Stops the daemon with SIGTERM like [`Daemon::stop`], but leaves its pin directory for
    /// the next daemon (for `--keep-forwarding`).
    ///
    /// # Errors
    /// As for [`Daemon::stop`].
    pub fn stop_leaving_pins(mut self) -> anyhow::Result<(std::process::ExitStatus, Vec<String>)> {
        self.keep_pins = true;
        self.stop()
    }

    fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("mgm did not stop within 10 s of SIGTERM and was killed")
    }
}

/// Collects every line `child` prints on stdout and stderr, from threads that end with it;
/// with `echo`, each line is also printed, behind that label.
pub fn keep_output(child: &mut Child, echo: Option<&'static str>) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(label) = echo {
                    println!("  {label} | {line}");
                }
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }
    log
}

/// One module socket per pin directory, so lab daemons never share one.
pub fn socket_for(pin_dir: &Path) -> PathBuf {
    let name = pin_dir.file_name().unwrap_or_default().to_string_lossy();
    PathBuf::from(format!("/run/mgm/{name}.sock"))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("warning: {e}");
        }
        // mgm removes its pins on a clean exit; after a kill they would be left behind.
        if !self.keep_pins {
            let _ = std::fs::remove_dir_all(&self.pin_dir);
            remove_stale_sockets(&self.pin_dir);
        }
    }
}

/// One control socket per pin directory, like [`socket_for`].
pub fn control_socket_for(pin_dir: &Path) -> PathBuf {
    let name = pin_dir.file_name().unwrap_or_default().to_string_lossy();
    PathBuf::from(format!("/run/mgm/{name}.ctl.sock"))
}

/// Removes the module and control sockets a killed daemon pinning in `pin_dir` left.
pub fn remove_stale_sockets(pin_dir: &Path) {
    remove_stale_socket(&socket_for(pin_dir));
    remove_stale_socket(&control_socket_for(pin_dir));
}

/// Removes the socket file a killed daemon left at `path` (a clean exit removed it already).
/// Anything else there is left alone: mgm refused to start over it, and so must the lab.
pub fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}
