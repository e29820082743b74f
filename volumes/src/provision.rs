//! Resolving a named mount: `mode=existing|create|ensure-exists`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::model::{CreateOptions, VolumeHandle, VolumeKind};
use crate::store::Store;

/// How long `ensure-exists` waits for another process's create of the
/// same volume to finish.
const ENSURE_WAIT: Duration = Duration::from_secs(120);

/// What to do about the volume a mount names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// It must exist (the default).
    #[default]
    Existing,
    /// It must not exist; it is created.
    Create,
    /// Created when missing; an existing one is reused when it matches.
    EnsureExists,
}

impl Mode {
    /// The spelling in `mode=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Existing => "existing",
            Mode::Create => "create",
            Mode::EnsureExists => "ensure-exists",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "existing" => Ok(Mode::Existing),
            "create" => Ok(Mode::Create),
            "ensure-exists" => Ok(Mode::EnsureExists),
            other => Err(Error::invalid(
                format!("mode {other:?}"),
                "use existing, create or ensure-exists",
            )),
        }
    }
}

/// A mount's request: the mode, and the attributes it states. With
/// `create` (and `ensure-exists` when missing) they define the new volume
/// (kind `dir` when unset); with `existing` and `ensure-exists` every
/// attribute given must match the existing volume, which is never changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provision {
    /// What to do.
    pub mode: Mode,
    /// Kind asked for.
    pub kind: Option<VolumeKind>,
    /// Disk capacity asked for, MiB.
    pub size_mib: Option<u32>,
    /// Quota asked for, MiB (0: unlimited).
    pub quota_mib: Option<u32>,
}

impl Provision {
    fn create_options(&self) -> CreateOptions {
        CreateOptions {
            kind: self.kind,
            quota_mib: self.quota_mib,
            size_mib: self.size_mib,
            labels: Default::default(),
        }
    }

    /// Errors with [`Error::Mismatch`] when `h` differs from a stated
    /// attribute.
    pub fn check_matches(&self, h: &VolumeHandle) -> Result<()> {
        let mismatch = |wanted: String, found: String| Error::Mismatch {
            name: h.name.clone(),
            wanted,
            found,
        };
        if let Some(k) = self.kind.filter(|k| *k != h.kind) {
            return Err(mismatch(format!("kind {k}"), format!("kind {}", h.kind)));
        }
        let show = |q: Option<u32>| match q {
            Some(q) => format!("quota {q} MiB"),
            None => "no quota".to_string(),
        };
        if let Some(q) = self.quota_mib {
            let want = Some(q).filter(|q| *q > 0);
            if want != h.quota_mib {
                return Err(mismatch(show(want), show(h.quota_mib)));
            }
        }
        if let Some(s) = self.size_mib {
            let have = h.capacity_bytes.map(|b| b >> 20);
            if have != Some(u64::from(s)) {
                let found = match have {
                    Some(m) => format!("size {m} MiB"),
                    None => "no size (a dir volume)".to_string(),
                };
                return Err(mismatch(format!("size {s} MiB"), found));
            }
        }
        Ok(())
    }
}

impl Store {
    /// Resolves volume `name` for a mount according to `req` (see
    /// [`Provision`]): returns it, created if the mode says so.
    pub fn provision(&mut self, name: &str, req: &Provision) -> Result<VolumeHandle> {
        match req.mode {
            Mode::Existing => {
                let h = self.get(name)?;
                req.check_matches(&h)?;
                Ok(h)
            }
            Mode::Create => self.create(name, &req.create_options()),
            Mode::EnsureExists => {
                let deadline = Instant::now() + ENSURE_WAIT;
                loop {
                    if let Some(h) = self.find(name)? {
                        req.check_matches(&h)?;
                        return Ok(h);
                    }
                    match self.create(name, &req.create_options()) {
                        // Another process is creating it: wait for it to
                        // finish, then reuse it if it fits.
                        Err(Error::AlreadyExists(_)) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        other => return other,
                    }
                }
            }
        }
    }
}
