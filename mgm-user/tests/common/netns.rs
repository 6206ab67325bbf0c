//! A network namespace of the calling thread's own, for test runs of the XDP programs: `lo`
//! and a veth `mgmv0` (peer `mgmv1`) to send copies to. Shared by the XDP tests and the
//! per-packet cost bench.

/// Moves the calling thread into a new network namespace and adds the veth with `mtu`, up.
/// The namespace goes with the thread, so nothing needs removing.
///
/// # Panics
/// Without root, or if `ip` fails.
pub fn enter_with_veth(mtu: u16) {
    // SAFETY: unshare affects only the calling thread.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) needs root: {}",
        std::io::Error::last_os_error()
    );
    let mtu = mtu.to_string();
    for args in [
        &[
            "link", "add", "mgmv0", "type", "veth", "peer", "name", "mgmv1",
        ][..],
        &["link", "set", "mgmv0", "mtu", &mtu, "up"],
    ] {
        let status = std::process::Command::new("ip")
            .args(args)
            .status()
            .expect("ip runs");
        assert!(status.success(), "ip {args:?}");
    }
}
