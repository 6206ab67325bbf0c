//! The operator's files: the example configuration, `mgm check` on good and bad files, and the
//! systemd unit. Runs the real `mgm` binary (`MGM_BIN`, set by `cargo xtask test`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};
use xtask::lab::mgm_bin;

fn repo(path: &str) -> PathBuf {
    xtask::workspace_root().join(path)
}

/// A file under the system's temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("mgm-{}-{name}", xtask::lab::unique_tag("op")));
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn check(config: &Path) -> Output {
    Command::new(mgm_bin())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run mgm check")
}

#[test]
fn mgm_check_accepts_the_example_configuration() {
    let out = check(&repo("mgm-user/examples/mgm.toml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("no problems"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mgm_check_lists_every_problem_with_its_line_and_exits_1() {
    let file = TempFile::new(
        "bad.toml",
        "[interfaces]\nupstream = \"eth0\"\ndownstream = [\"eth0\"]\n[igmp]\nversion = 1\n",
    );
    let out = check(&file.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(
        stderr.contains("line 3: eth0 is named as upstream and again as downstream"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: version = 1 is not served: write 3 or 2"),
        "{stderr}"
    );
}

#[test]
fn mgm_check_places_per_interface_igmp_problems_at_their_table() {
    let file = TempFile::new(
        "per-if.toml",
        "[interfaces]\ndownstream = [\"eth1\"]\n[igmp]\nquery-response-ms = 9000\n\
         [igmp.interface.eth1]\nquery-interval = 5\n[igmp.interface.eth2]\nfast-leave = true\n",
    );
    let out = check(&file.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(
        stderr.contains(
            "line 6: [igmp.interface.eth1] query-response-ms = 9000 is not below \
             query-interval = 5 s: write query-response-ms below 5000, or a longer query-interval"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("[igmp.interface.eth2] eth2 is not a downstream")
            && stderr.contains("add \"eth2\" to [interfaces] downstream, or remove this table"),
        "{stderr}"
    );
}

#[test]
fn mgm_run_refuses_a_bad_configuration_before_touching_anything() {
    let file = TempFile::new("unknown.toml", "[igmp]\nquery-intervall = 10\n");
    let out = Command::new(mgm_bin())
        .args(["run", "--config"])
        .arg(&file.0)
        .output()
        .expect("run mgm run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2: ") && stderr.contains("`query-interval`"),
        "{stderr}"
    );
}

/// The unit in the repository, with its paths pointed at this build and the example
/// configuration, is one systemd accepts without a warning, and its pre-start check passes.
#[test]
fn the_systemd_unit_verifies() {
    const ANALYZE: &str = "/usr/bin/systemd-analyze";
    if !Path::new(ANALYZE).exists() {
        xtask::kernel::announce_skip("the_systemd_unit_verifies", "systemd-analyze is missing");
        return;
    }
    let unit = std::fs::read_to_string(repo("mgm-user/dist/mgm.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/sbin/mgm run --config /etc/mgm/mgm.toml"));
    assert!(unit.contains("Restart=on-failure"));
    let dir = std::env::temp_dir().join(xtask::lab::unique_tag("unit"));
    std::fs::create_dir_all(&dir).unwrap();
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(dir.clone());
    let local = unit
        .replace("/usr/local/sbin/mgm", &mgm_bin().display().to_string())
        .replace(
            "/etc/mgm/mgm.toml",
            &repo("mgm-user/examples/mgm.toml").display().to_string(),
        );
    let path = dir.join("mgm.service");
    std::fs::write(&path, &local).unwrap();
    let out = Command::new(ANALYZE)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    let pre = local
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("the unit checks its configuration before starting");
    let words: Vec<&str> = pre.split_whitespace().collect();
    let out = Command::new(words[0]).args(&words[1..]).output().unwrap();
    assert!(out.status.success(), "{pre}: {out:?}");
}
