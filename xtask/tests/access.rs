//! Who may use the module socket, on the real binary: root, or the group the operator names.
//! The socket file's mode tells the kernel; mgm also checks every peer's credentials, so a
//! loosened mode does not let anyone else in. And mgm never removes a file at the socket path
//! that is not a stale socket of its own.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

use xtask::lab::{daemon::socket_for, mgm_bin, unique_tag, Daemon, IgmpVersion, Lab};

const NOBODY: u32 = 65534;

/// The first line the socket sends to a client running as `uid` (root when `None`), or
/// `connect failed: …`.
fn first_line_as(uid: Option<u32>, socket: &Path) -> String {
    const CLIENT: &str = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    print('connect failed:', e)\n    sys.exit(0)\n\
        print(s.makefile().readline().strip())\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", CLIENT]).arg(socket);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Restores a path's mode on drop.
struct Mode(PathBuf, u32);

impl Drop for Mode {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(self.1));
    }
}

fn loosen(path: &Path, mode: u32) -> Mode {
    let old = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    Mode(path.to_owned(), old)
}

#[test]
fn a_peer_that_is_not_root_is_refused_even_where_the_file_mode_lets_it_connect() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V2]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let mut daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &["--xdp-mode", "skb"], false)
        .expect("mgm starts");
    let socket = daemon.socket();
    let hello = first_line_as(None, &socket);
    assert!(hello.contains(r#""hello":"mgm""#), "root: {hello}");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is root's alone");

    // An operator loosens the modes by mistake: the kernel now lets nobody connect.
    let _dir = loosen(socket.parent().unwrap(), 0o755);
    let _sock = loosen(&socket, 0o666);
    let line = first_line_as(Some(NOBODY), &socket);
    assert!(
        line.contains("accepts modules from root only") && !line.contains("hello"),
        "uid {NOBODY} got: {line}"
    );
    daemon
        .wait_for(
            &format!("refused a connection from uid {NOBODY}"),
            std::time::Duration::from_secs(5),
        )
        .expect("the refusal is logged");
}

#[test]
fn a_named_group_may_use_the_socket() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V2]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    // SAFETY: getgrgid returns NULL or a valid entry, read at once.
    let group = unsafe {
        let gr = libc::getgrgid(NOBODY);
        assert!(!gr.is_null(), "gid {NOBODY} has a group");
        std::ffi::CStr::from_ptr((*gr).gr_name)
            .to_string_lossy()
            .into_owned()
    };
    let args = ["--xdp-mode", "skb", "--socket-group", &group];
    let daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &args, false).expect("mgm starts");
    let socket = daemon.socket();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), NOBODY);
    // The shared test directory may be root's alone; the group's own would be 0750.
    let _dir = loosen(socket.parent().unwrap(), 0o755);
    let hello = first_line_as(Some(NOBODY), &socket);
    assert!(hello.contains(r#""hello":"mgm""#), "group {group}: {hello}");
}

#[test]
fn mgm_does_not_start_over_a_file_that_is_not_its_socket_and_leaves_it_alone() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V2]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let path = socket_for(&pin_dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "an operator's file\n").unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _file = Remove(path.clone());
    let err = Daemon::start(&mgm_bin(), &lab, &pin_dir, &["--xdp-mode", "skb"], false)
        .err()
        .expect("mgm refuses to start");
    assert!(format!("{err:#}").contains("is not a socket"), "{err:#}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "an operator's file\n"
    );
}
