//! Who may use the module socket (and the control socket, by the same rules), and how its
//! file is put in place. A module can take interfaces and decide forwarding, so only root, or
//! the members of one group the operator names, may connect: the file's mode says so to the
//! kernel, and each connection's peer credentials (SO_PEERCRED) are checked again, so a
//! descriptor passed to another process or a loosened mode does not widen it.

use std::{
    ffi::CString,
    io::ErrorKind,
    os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
    path::Path,
};

use anyhow::{bail, Context};

/// Who may connect: root, and the members of `group` if one is named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    group: Option<Group>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: String,
    gid: u32,
    /// Users listed as members, besides those whose primary group it is.
    members: Vec<String>,
}

impl Access {
    /// Root only.
    pub fn root_only() -> Access {
        Access::default()
    }

    /// Root and the members of the group called `name`.
    ///
    /// # Errors
    /// No group of that name exists.
    pub fn root_and_group(name: &str) -> anyhow::Result<Access> {
        let c = CString::new(name).context("a group name has no NUL byte")?;
        // SAFETY: `c` is NUL-terminated; getgrnam's result is read before any other call
        // that could overwrite its static buffer.
        let gr = unsafe { libc::getgrnam(c.as_ptr()) };
        if gr.is_null() {
            bail!("no group called {name:?} (see /etc/group)");
        }
        // SAFETY: `gr` is non-null and points to a valid group entry whose `gr_mem` is a
        // NULL-terminated array of NUL-terminated strings.
        let (gid, members) = unsafe {
            let mut members = Vec::new();
            let mut m = (*gr).gr_mem;
            while !m.is_null() && !(*m).is_null() {
                members.push(std::ffi::CStr::from_ptr(*m).to_string_lossy().into_owned());
                m = m.add(1);
            }
            ((*gr).gr_gid, members)
        };
        Ok(Access {
            group: Some(Group {
                name: name.to_owned(),
                gid,
                members,
            }),
        })
    }

    /// Whether a peer with these credentials may use the socket.
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        uid == 0
            || self.group.as_ref().is_some_and(|g| {
                gid == g.gid || user_name(uid).is_some_and(|u| g.members.contains(&u))
            })
    }

    /// Who may connect, in words for logs and refusals.
    pub fn describe(&self) -> String {
        match &self.group {
            None => "root only".to_owned(),
            Some(g) => format!("root and group {}", g.name),
        }
    }

    /// Makes `path` ready to listen on: its directory is created for root (and the group)
    /// alone if it does not exist, and a stale socket left by a dead daemon is removed.
    /// Anything else at `path` is left alone and refused.
    ///
    /// # Errors
    /// Another daemon answers on `path`, something that is not a socket is there, or the
    /// directory cannot be made.
    pub fn prepare(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(if self.group.is_some() { 0o750 } else { 0o700 })
                    .create(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                self.give_to_group(dir)?;
            }
        }
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot look at {}", path.display())),
        };
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; mgm removes only a stale socket there: move \
                 the file or give mgm another socket path",
                path.display()
            );
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "another mgm listens on {}; give this one another socket path",
                path.display()
            ),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display())),
            Err(e) => {
                Err(e).with_context(|| format!("cannot tell whether {} is stale", path.display()))
            }
        }
    }

    /// Sets the mode (and group) of the socket file just bound at `path`.
    ///
    /// # Errors
    /// The mode or owner cannot be set.
    pub fn restrict(&self, path: &Path) -> anyhow::Result<()> {
        let mode = if self.group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
        self.give_to_group(path)
    }

    fn give_to_group(&self, path: &Path) -> anyhow::Result<()> {
        match &self.group {
            Some(g) => std::os::unix::fs::chown(path, None, Some(g.gid))
                .with_context(|| format!("cannot give {} to group {}", path.display(), g.name)),
            None => Ok(()),
        }
    }
}

fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid returns NULL or a valid entry, read before any other pw call.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: `pw` is non-null and its `pw_name` is a NUL-terminated string.
    Some(
        unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mgm-access-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn root_only_allows_root_alone() {
        let a = Access::root_only();
        assert!(a.allows(0, 0));
        assert!(!a.allows(1000, 0), "gid 0 without uid 0 is not root");
        assert!(!a.allows(65534, 65534));
    }

    #[test]
    fn a_group_allows_its_gid_and_nobody_else() {
        let a = Access::root_and_group("root").unwrap();
        assert!(a.allows(0, 0) && a.allows(1000, 0));
        assert!(!a.allows(65534, 65534));
        assert!(Access::root_and_group("no-such-group-here")
            .unwrap_err()
            .to_string()
            .contains("no group called"));
    }

    #[test]
    fn prepare_makes_a_private_directory() {
        let d = dir("mkdir");
        Access::root_only().prepare(&d.join("sub/m.sock")).unwrap();
        let mode = std::fs::metadata(d.join("sub"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn prepare_never_removes_a_file_that_is_not_a_socket() {
        let d = dir("file");
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("m.sock");
        std::fs::write(&path, "precious").unwrap();
        let e = Access::root_only().prepare(&path).unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        std::os::unix::fs::symlink(&path, d.join("link.sock")).unwrap();
        assert!(Access::root_only().prepare(&d.join("link.sock")).is_err());
        assert!(path.exists() && d.join("link.sock").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn prepare_removes_a_stale_socket_and_refuses_a_live_one() {
        let d = dir("sock");
        std::fs::create_dir_all(&d).unwrap();
        let stale = d.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        Access::root_only().prepare(&stale).unwrap();
        assert!(!stale.exists());
        let live = d.join("live.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let e = Access::root_only().prepare(&live).unwrap_err();
        assert!(e.to_string().contains("another mgm"), "{e}");
        assert!(live.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
