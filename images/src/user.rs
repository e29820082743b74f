//! The image config's `User` (`user[:group]`, by name or number) turned
//! into ids the way container runtimes do it, from the image's own
//! `/etc/passwd` and `/etc/group`, read on the host beneath the image root
//! (never through NSS, never through a symlink).
//!
//! - empty: root (`0:0`, home `/root`);
//! - a number: that uid; its primary group and home come from the passwd
//!   entry of that uid when there is one (else gid 0, home `/`);
//! - a name: its passwd entry, which must exist;
//! - `:group`: a number is taken as is, a name must be in `/etc/group`.

use std::ffi::CStr;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use crate::error::{Error, Result};
use crate::unpack::tree::open_subdir;

/// Largest `/etc/passwd` or `/etc/group` read.
const MAX_DB_BYTES: u64 = 16 << 20;

/// Who the image's processes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory (`HOME` when the image's environment sets none).
    pub home: String,
}

/// One line of `/etc/passwd`.
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn bad(spec: &str, why: impl Into<String>) -> Error {
    Error::BadUser {
        user: spec.to_string(),
        why: why.into(),
    }
}

/// A number that is a valid id (not `(uid_t)-1`, which means "unchanged").
fn parse_id(text: &str) -> Option<Result<u32, ()>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u32>()
            .ok()
            .filter(|&n| n != u32::MAX)
            .ok_or(()),
    )
}

/// Resolves `spec` (the config's `User`) against the image tree at `root`.
pub fn resolve(root: &Path, spec: &str) -> Result<User> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = || read_db(root, c"passwd", spec);
    let mut out = match parse_id(user) {
        None if user.is_empty() => User {
            uid: 0,
            gid: 0,
            home: "/root".into(),
        },
        Some(Err(())) => return Err(bad(spec, format!("user id {user:?} is out of range"))),
        Some(Ok(uid)) => {
            // A numeric user need not be in the image's passwd file.
            let entries = passwd().ok().flatten().unwrap_or_default();
            match parse_passwd(&entries).into_iter().find(|e| e.uid == uid) {
                Some(e) => User {
                    uid,
                    gid: e.gid,
                    home: e.home,
                },
                None => User {
                    uid,
                    gid: 0,
                    home: if uid == 0 { "/root" } else { "/" }.into(),
                },
            }
        }
        None => {
            let text = passwd()?
                .ok_or_else(|| bad(spec, "the image has no /etc/passwd to look the name up in"))?;
            let e = parse_passwd(&text)
                .into_iter()
                .find(|e| e.name == user)
                .ok_or_else(|| bad(spec, format!("no user {user:?} in the image's /etc/passwd")))?;
            User {
                uid: e.uid,
                gid: e.gid,
                home: e.home,
            }
        }
    };
    match group {
        None => {}
        Some("") => return Err(bad(spec, "empty group after ':'")),
        Some(g) => {
            out.gid = match parse_id(g) {
                Some(Ok(gid)) => gid,
                Some(Err(())) => return Err(bad(spec, format!("group id {g:?} is out of range"))),
                None => {
                    let text = read_db(root, c"group", spec)?.ok_or_else(|| {
                        bad(spec, "the image has no /etc/group to look the group up in")
                    })?;
                    group_id(&text, g).ok_or_else(|| {
                        bad(spec, format!("no group {g:?} in the image's /etc/group"))
                    })?
                }
            }
        }
    }
    if out.home.is_empty() {
        out.home = "/".into();
    }
    Ok(out)
}

/// `/etc/NAME` of the tree at `root`: `None` when it does not exist. A
/// symlinked `/etc` or file is refused, never followed.
fn read_db(root: &Path, name: &CStr, spec: &str) -> Result<Option<String>> {
    let what = format!("/etc/{}", name.to_string_lossy());
    let top = std::fs::File::open(root).map_err(|e| Error::io("open", root, e))?;
    let etc = match open_subdir(top.as_fd(), c"etc") {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(bad(spec, format!("cannot open the image's /etc: {e}"))),
    };
    let fd = match virtiofsd_msb::confinement::open_beneath(
        etc.as_fd(),
        name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
    ) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(bad(
                spec,
                format!("the image's {what} is a symlink (not followed)"),
            ))
        }
        Err(e) => return Err(bad(spec, format!("cannot open the image's {what}: {e}"))),
    };
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_DB_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(spec, format!("reading the image's {what}: {e}")))?;
    if bytes.len() as u64 > MAX_DB_BYTES {
        return Err(bad(spec, format!("the image's {what} is over 16 MiB")));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The well-formed entries of a passwd file (others are skipped).
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 6 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// The gid of group `name` in a group file.
fn group_id(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(passwd: Option<&str>, group: Option<&str>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        if let Some(p) = passwd {
            std::fs::write(d.path().join("etc/passwd"), p).unwrap();
        }
        if let Some(g) = group {
            std::fs::write(d.path().join("etc/group"), g).unwrap();
        }
        d
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\n\
                          app:x:1000:1001:App:/home/app:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1001:\n";

    fn ids(u: User) -> (u32, u32, String) {
        (u.uid, u.gid, u.home)
    }

    #[test]
    fn names_and_numbers() {
        let d = image(Some(PASSWD), Some(GROUP));
        let r = |s: &str| resolve(d.path(), s).map(ids);
        assert_eq!(r("").unwrap(), (0, 0, "/root".into()));
        assert_eq!(r("app").unwrap(), (1000, 1001, "/home/app".into()));
        assert_eq!(r("1000").unwrap(), (1000, 1001, "/home/app".into()));
        assert_eq!(r("4242").unwrap(), (4242, 0, "/".into()));
        assert_eq!(r("app:staff").unwrap(), (1000, 50, "/home/app".into()));
        assert_eq!(r("app:7").unwrap(), (1000, 7, "/home/app".into()));
        assert_eq!(r("12:34").unwrap(), (12, 34, "/".into()));
        assert_eq!(r(":staff").unwrap(), (0, 50, "/root".into()));
        assert_eq!(r("nobody").unwrap(), (65534, 65534, "/nonexistent".into()));
    }

    #[test]
    fn unknown_names_and_bad_ids_are_named() {
        let d = image(Some(PASSWD), Some(GROUP));
        for (spec, want) in [
            ("ghost", "no user \"ghost\""),
            ("app:ghosts", "no group \"ghosts\""),
            ("4294967295", "out of range"),
            ("99999999999", "out of range"),
            ("app:", "empty group"),
        ] {
            let e = resolve(d.path(), spec).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(spec), "{spec}: {e}");
        }
    }

    #[test]
    fn missing_files_only_matter_for_names() {
        let d = image(None, None);
        assert_eq!(ids(resolve(d.path(), "5:6").unwrap()), (5, 6, "/".into()));
        let e = resolve(d.path(), "app").unwrap_err().to_string();
        assert!(e.contains("no /etc/passwd"), "{e}");
        let e = resolve(d.path(), "0:wheel").unwrap_err().to_string();
        assert!(e.contains("no /etc/group"), "{e}");
    }

    #[test]
    fn symlinks_are_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), PASSWD).unwrap();
        let d = image(None, None);
        std::os::unix::fs::symlink(outside.path().join("passwd"), d.path().join("etc/passwd"))
            .unwrap();
        let e = resolve(d.path(), "app").unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        let d2 = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d2.path().join("etc")).unwrap();
        assert!(resolve(d2.path(), "app").is_err());
    }
}
